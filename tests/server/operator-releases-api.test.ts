// The operator API for releases, rollouts, devices and the audit log at its boundary: the OpenAPI document
// is valid and made of the very schemas that validate requests; bad input gets a precise 4xx; roles hold;
// every action is audited with who, what, when and from where, and no secret.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import Ajv2020 from "ajv/dist/2020";
import { z } from "zod";
import { createReleaseBody, devicePatchBody, rolloutStartBody } from "../../server/api/operator/schemas";
import { ROUTES } from "../../server/api/operator/routes";
import { HELLO_WORLD } from "../helpers/fixtures";
import { Operator, poll } from "../helpers/fleet";
import { eventually, ROOT, startTestServer, type TestServer } from "../helpers/server";

describe("operator API: releases, rollouts, devices, audit", () => {
  let s: TestServer;
  let admin: Operator;
  let viewer: Operator;
  let releaser: Operator;

  beforeAll(async () => {
    s = await startTestServer();
    admin = new Operator(s);
    const creds = s.running.ctx.credentials;
    viewer = new Operator(s, (await creds.issueOperatorToken("vera", "viewer")).token);
    releaser = new Operator(s, (await creds.issueOperatorToken("rita", "releaser")).token);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello.bin"));
    await eventually(() => s.running.ctx.catalog.imageByName("hello.bin"));
  });
  afterAll(async () => s.close());

  describe("OpenAPI", () => {
    let doc: any;
    beforeAll(async () => {
      const r = await s.req("GET", "/api/v1/openapi.json");
      expect(r.status).toBe(200);
      doc = r.json();
    });

    it("is served without a token and is a valid OpenAPI 3.1 document", () => {
      const file = path.join(s.dirs.root, "openapi.json");
      fs.writeFileSync(file, JSON.stringify(doc));
      const v = spawnSync(process.execPath, [path.join(ROOT, "node_modules/@seriousme/openapi-schema-validator/bin/validate-api-cli.js"), file], { encoding: "utf8" });
      expect(JSON.parse(v.stdout)).toEqual({ valid: true });
      expect(doc.openapi).toBe("3.1.0");
    });

    it("describes every route the server registers, with its role", () => {
      const described = Object.entries(doc.paths).flatMap(([p, ops]: [string, any]) => Object.keys(ops).map((m) => `${m} ${p}`));
      expect(described.sort()).toEqual(ROUTES.map((r) => `${r.method} /api/v1${r.path.replace(/:(\w+)/g, "{$1}")}`).sort());
      expect(doc.paths["/api/v1/releases"].post.description).toMatch(/releaser/);
      expect(doc.paths["/api/v1/audit"].get.description).toMatch(/admin/);
    });

    it("request bodies are the validating zod schemas, and a JSON-schema validator agrees with the server", () => {
      const createSchema = doc.paths["/api/v1/releases"].post.requestBody.content["application/json"].schema;
      const { $schema: _ignored, ...expected } = z.toJSONSchema(createReleaseBody, { io: "input", unrepresentable: "any" }) as any;
      expect(createSchema).toEqual(expected);
      const ajv = new Ajv2020({ strict: false });
      const check = ajv.compile(doc.paths["/api/v1/releases/{name}/rollout"].post.requestBody.content["application/json"].schema);
      const samples: unknown[] = [{}, { stages: [5, 100] }, { stages: [100], advance: "auto" }, { stages: "10,100" }, { advance: "sometimes" }, { extra: 1 }, { min_sample: 0 }, { max_failure_rate: 101 }];
      for (const body of samples) expect([body, check(body)]).toEqual([body, rolloutStartBody.safeParse(body).success]);
      const patch = ajv.compile(doc.paths["/api/v1/devices/{id}"].patch.requestBody.content["application/json"].schema);
      for (const body of [{ group: "lab" }, { group: null }, { add_tags: ["a b"] }, { chip_rev: -1 }, { channel: "Beta" }]) {
        expect([body, patch(body)]).toEqual([body, devicePatchBody.safeParse(body).success]);
      }
    });
  });

  describe("validation", () => {
    const bad = async (method: string, p: string, body: unknown, status: number, code: string, message?: RegExp) => {
      const r = await admin.call(method, p, body);
      expect([p, r.status, r.json().error.code]).toEqual([p, status, code]);
      if (message) expect(r.json().error.message).toMatch(message);
    };

    it("refuses malformed releases with the field named", async () => {
      await bad("POST", "/releases", { name: "bad name", image: "hello.bin" }, 400, "invalid_request", /^name: release names are/);
      await bad("POST", "/releases", { name: "ok", image: "hello.bin", colour: "red" }, 400, "invalid_request", /colour/);
      await bad("POST", "/releases", { name: "ok", image: "hello.bin", channel: "Stable!" }, 400, "invalid_request", /^channel:/);
      await bad("POST", "/releases", { name: "ok", image: "hello.bin", min_version: "latest" }, 400, "invalid_request", /^min_version: must contain a version number/);
      await bad("POST", "/releases", { name: "ok", image: "hello.bin", via: "x" }, 400, "invalid_request", /^via: via needs min_version/);
      await bad("POST", "/releases", { name: "ok", image: "hello.bin", targets: { devices: ["no spaces"] } }, 400, "invalid_request", /^targets.devices.0: device id/);
      await bad("POST", "/releases", { name: "ok", image: "nothing.bin" }, 422, "image_not_found", /GET \/api\/v1\/firmware/);
      await bad("POST", "/releases", { name: "ok", image: "hello.bin", min_version: "1.0.0", via: "missing" }, 422, "via_not_found");
      const raw = await s.req("POST", "/api/v1/releases", { headers: { Authorization: `Bearer ${s.creds.operatorToken}`, "Content-Type": "application/json" }, body: "{nope" });
      expect([raw.status, raw.json().error.code]).toEqual([400, "invalid_json"]);
    });

    it("two creates of one name at once: one wins, the other is a 409", async () => {
      const both = await Promise.all([1, 2].map(() => admin.call("POST", "/releases", { name: "race", image: "hello.bin" })));
      expect(both.map((r) => r.status).sort()).toEqual([201, 409]);
    });

    it("refuses bad rollout plans and impossible transitions", async () => {
      await admin.ok("POST", "/releases", { name: "v-ok", image: "hello.bin" });
      await bad("POST", "/releases", { name: "v-ok", image: "hello.bin" }, 409, "release_exists");
      await bad("POST", "/releases/v-ok/rollout", { stages: [50, 10, 100] }, 400, "invalid_request", /^stages: stages must increase/);
      await bad("POST", "/releases/v-ok/rollout", { stages: [10, 50] }, 400, "invalid_request", /last stage must be 100/);
      await bad("POST", "/releases/v-ok/rollout", { stages: [0.001, 100] }, 400, "invalid_request", /0.01 %/);
      await bad("POST", "/releases/v-ok/rollout", { success_threshold: 120 }, 400, "invalid_request", /^success_threshold:/);
      await bad("POST", "/releases/nope/rollout", {}, 404, "release_not_found");
      await admin.ok("POST", "/releases/v-ok/rollout", { stages: [25, 100] });
      await bad("POST", "/releases/v-ok/rollout", {}, 409, "rollout_exists", /create a new release/);
      await bad("POST", "/rollouts/v-ok/resume", {}, 409, "invalid_transition", /it is running/);
      await bad("POST", "/rollouts/v-ok/advance", { force: true }, 400, "invalid_request");
      await bad("POST", "/rollouts/v-ok/pause", { reason: "" }, 400, "invalid_request", /^reason:/);
      await bad("GET", "/rollouts/ro_000000000000", undefined, 404, "rollout_not_found");
    });

    it("refuses bad device changes and queries", async () => {
      await poll(s, "dev-x", { chip: "esp32" });
      await bad("PATCH", "/devices/dev-x", { group: "a group" }, 400, "invalid_request", /^group: tags and groups are/);
      await bad("PATCH", "/devices/dev-x", { chip: "z80" }, 400, "invalid_request", /^chip: must be one of esp32/);
      await bad("PATCH", "/devices/dev-x", { chip_rev: 70000 }, 400, "invalid_request", /^chip_rev:/);
      await bad("PATCH", "/devices/nobody", { group: "lab" }, 404, "device_not_found", /first poll or are provisioned/);
      await bad("GET", "/devices?online=maybe", undefined, 400, "invalid_request", /^online:/);
      await bad("GET", "/devices?colour=red", undefined, 400, "invalid_request");
      const ok = await admin.ok("PATCH", "/devices/dev-x", { chip: "ESP32-S3", chip_rev: 1, add_tags: ["b", "a", "a"] });
      expect(ok.device).toMatchObject({ chip: "esp32s3", chip_rev: 1, tags: ["a", "b"], channel: "stable", group: null });
    });
  });

  describe("roles and the audit log", () => {
    it("a viewer reads but cannot change anything, and the refused attempt is audited", async () => {
      expect((await viewer.call("GET", "/releases")).status).toBe(200);
      const r = await viewer.call("POST", "/releases", { name: "sneaky", image: "hello.bin" });
      expect([r.status, r.json().error.code]).toEqual([403, "insufficient_role"]);
      const audit = await admin.ok("GET", "/audit?actor=vera");
      expect(audit.entries[0]).toMatchObject({ action: "denied", outcome: "denied", target: "/api/v1/releases", role: "viewer", ip: "127.0.0.1", details: { method: "POST", needs: "releaser" } });
      expect((await releaser.call("GET", "/audit")).status).toBe(403);
    });

    it("device and fleet keys are refused", async () => {
      const r = await s.req("POST", "/api/v1/releases", { headers: { "X-API-Key": s.creds.deviceApiKey, "Content-Type": "application/json" }, body: "{}" });
      expect([r.status, r.json().error.code]).toEqual([403, "wrong_credential_kind"]);
    });

    it("records who did what, when and from where, with no secret", async () => {
      await poll(s, "dev-audited", { chip: "esp32" });
      await releaser.ok("POST", "/releases", { name: "by-rita", image: "hello.bin", notes: "n" });
      await releaser.ok("POST", "/releases/by-rita/rollout", {});
      await releaser.ok("POST", "/rollouts/by-rita/pause", { reason: "lunch" });
      await releaser.ok("PATCH", "/devices/dev-audited", { group: "lab" });
      const bundle = await admin.ok("POST", "/devices/new-dev/provision", {});
      const entries = (await admin.ok("GET", "/audit?limit=5")).entries;
      expect(entries.map((e: any) => [e.actor, e.action])).toEqual([
        ["admin", "device.provision"],
        ["rita", "device.update"],
        ["rita", "rollout.pause"],
        ["rita", "rollout.start"],
        ["rita", "release.create"],
      ]);
      for (const e of entries) {
        expect(e).toMatchObject({ source: "api", ip: "127.0.0.1", outcome: "ok", at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), request_id: expect.any(String) });
      }
      expect(entries[2].details).toMatchObject({ reason: "lunch", release: "by-rita", state: "paused" });
      const all = JSON.stringify((await admin.ok("GET", "/audit?limit=1000")).entries);
      expect(all).not.toContain(bundle.apiKey);
      expect(all).not.toContain(bundle.hmacKey);
      expect(all).not.toContain(s.creds.operatorToken);
    });
  });
});
