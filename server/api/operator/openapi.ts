// The OpenAPI 3.1 document of the operator API, generated from the route table and its zod request schemas
// (the very objects the handlers validate with). Served at /api/v1/openapi.json.
import { z } from "zod";
import { ROUTES, type RouteDef } from "./routes";

type JsonSchema = Record<string, unknown>;

function schemaOf(zs: z.ZodType): JsonSchema {
  // "input": what a client sends (before defaults and transforms); transforms have no JSON form.
  const { $schema: _s, ...rest } = z.toJSONSchema(zs, { io: "input", unrepresentable: "any" }) as JsonSchema;
  return rest;
}

function parameters(where: "path" | "query", zs: z.ZodType | undefined) {
  if (!zs) return [];
  const js = schemaOf(zs) as { properties?: Record<string, JsonSchema>; required?: string[] };
  return Object.entries(js.properties ?? {}).map(([name, schema]) => ({
    name,
    in: where,
    required: where === "path" || (js.required ?? []).includes(name),
    ...(typeof schema.description === "string" ? { description: schema.description } : {}),
    schema,
  }));
}

const ERROR_REF = { $ref: "#/components/schemas/Error" };
const STANDARD_ERRORS: Record<number, string> = {
  400: "invalid request: `invalid_request` (with `fields`), `invalid_json`",
  401: "`missing_credential`, `invalid_token`, `token_expired`, `token_revoked`",
  403: "`insufficient_role`, `wrong_credential_kind` (device or fleet keys are refused here)",
  429: "`too_many_auth_failures` (with Retry-After)",
};

function operation(def: RouteDef) {
  const responses: Record<string, unknown> = {};
  for (const [code, description] of Object.entries({ ...STANDARD_ERRORS, ...def.responses })) {
    const status = Number(code);
    responses[code] = {
      description,
      content: { "application/json": { schema: status >= 400 ? ERROR_REF : { type: "object" } } },
    };
  }
  const op: Record<string, unknown> = {
    operationId: `${def.method}${def.path.replace(/[/:](\w)/g, (_m, c: string) => c.toUpperCase()).replace(/[^A-Za-z0-9]/g, "") || "Info"}`,
    tags: [def.tag],
    summary: def.summary,
    description: `Role: \`${def.role}\` or above.`,
    parameters: [...parameters("path", def.params), ...parameters("query", def.query)],
    responses,
  };
  if (def.body) op.requestBody = { required: true, content: { "application/json": { schema: schemaOf(def.body) } } };
  if (def.multipart) {
    const fields = schemaOf(def.multipart) as { properties?: Record<string, unknown> };
    op.requestBody = {
      required: true,
      content: {
        "multipart/form-data": {
          schema: {
            type: "object",
            properties: { file: { type: "string", contentMediaType: "application/octet-stream", description: "the ESP-IDF app image" }, ...(fields.properties ?? {}) },
            required: ["file"],
          },
        },
      },
    };
  }
  return op;
}

export function buildOpenApi(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const def of ROUTES) {
    const p = "/api/v1" + def.path.replace(/:(\w+)/g, "{$1}");
    (paths[p] ??= {})[def.method] = operation(def);
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "esp32-ota operator API",
      version,
      description: "Fleet, firmware, releases, rollouts and audit. Bearer operator tokens with roles viewer < releaser < admin.",
    },
    servers: [{ url: "/" }],
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
      schemas: {
        Error: {
          type: "object",
          required: ["error"],
          properties: {
            error: {
              type: "object",
              required: ["code", "message"],
              properties: {
                code: { type: "string" },
                message: { type: "string" },
                fields: { type: "array", items: { type: "object", properties: { path: { type: "string" }, message: { type: "string" } } } },
              },
            },
          },
        },
      },
    },
  };
}
