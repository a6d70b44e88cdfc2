// Device API authentication: a device's own key (for its device id) or a fleet key, sent in X-API-Key or,
// for clients that can only do that (Arduino HTTPUpdate, esp_http_client), as HTTP Basic with the key as
// the password. Operator tokens are refused here with 403, so an operator credential cannot act as a device.
// Keys and devices are read from the database on every request: a revocation holds from the next request on.
// A key in the query string is refused outright: URLs end up in proxy and server logs.
import type { IncomingHttpHeaders } from "node:http";
import type { RequestHandler } from "express";
import parseBasic from "basic-auth";
import { looksLikeJwt } from "../../infra/auth/credentials";
import { DEVICE_KEY_PREFIX, FLEET_KEY_PREFIX, safeEqual } from "../../infra/auth/keys";
import type { Context } from "../../context";
import type { MaybePromise } from "../../infra/maybe-promise";
import { normalizeDeviceId, DEVICE_ID_RULE } from "../../domain/devices/device-id";
import { badRequest, forbidden, HttpError, type CodeWithStatus } from "../http/errors";
import type { RecordAuthFailure } from "../http/auth-limiter";
import type { DeviceIdentity } from "../http/express-types";
import type { DeviceRow } from "../../infra/store/schema";

/** The same words for every wrong key, whatever its form, so the answer tells nothing about what was guessed. */
const INVALID_KEY = "the API key is not valid; send a device key (ota device provision) or a fleet key (ota apikey create)";

const MAX_KEY_LEN = 256;
/** The longest operator token the operator API reads (server/api/operator/auth.ts). */
const MAX_TOKEN_LEN = 4096;

/** Lets a client that waits for a challenge (esp_http_client without auth_type set) send Basic. */
const CHALLENGE = { "WWW-Authenticate": 'Basic realm="esp32-ota devices", charset="UTF-8"' };

const unauthorized = (code: CodeWithStatus<401>, message: string) => new HttpError(401, code, message, CHALLENGE);

/** The 401 to a request that presented no credential at all: a challenge, not a failed guess. */
class AuthChallenge extends HttpError {
  constructor(code: CodeWithStatus<401>, message: string) {
    super(401, code, message, CHALLENGE);
  }
}

/** Query parameters that look like a credential: refused so nobody learns to put keys in URLs. */
const KEY_PARAM_RE = /^(api[_-]?key|key|token|access[_-]?token|password|secret)$/i;

/** Where a request may say which device it is, in order of precedence. */
const ID_SOURCES = [
  { header: "x-device-id", name: "X-Device-Id" },
  { header: "x-esp32-sta-mac", name: "x-ESP32-STA-MAC" },
] as const;

type IdSource = NonNullable<DeviceIdentity["idSource"]>;

interface Presented {
  key: string;
  /** The Basic user name: the device id, when the key came that way and a name was given. */
  basicUser: string | null;
}

function presentedKey(headers: IncomingHttpHeaders): Presented | null {
  const header = headers["x-api-key"];
  if (header) return { key: header as string, basicUser: null };
  const authorization = headers.authorization ?? "";
  const basic = /^\s*basic\s/i.test(authorization) ? parseBasic.parse(authorization) : undefined;
  if (basic && basic.pass) return { key: basic.pass, basicUser: basic.name || null };
  return null;
}

function refuseQueryCredentials(url: string): void {
  const q = url.indexOf("?");
  if (q < 0) return;
  for (const [name, value] of new URLSearchParams(url.slice(q + 1))) {
    if (KEY_PARAM_RE.test(name) || value.startsWith(DEVICE_KEY_PREFIX) || value.startsWith(FLEET_KEY_PREFIX)) {
      throw badRequest(
        "credential_in_query",
        "credentials are not accepted in the URL (they would be logged); send the key in X-API-Key or as the HTTP Basic password, and replace it if it was real",
      );
    }
  }
}

/** The device this request speaks for: every place that names one must agree. */
function claimedDeviceId(headers: IncomingHttpHeaders, basicUser: string | null): { id: string; source: IdSource } | null {
  const claims: { id: string; from: string; source: IdSource }[] = [];
  for (const src of ID_SOURCES) {
    const value = headers[src.header];
    if (value === undefined) continue;
    const raw = Array.isArray(value) ? value.join(", ") : value; // repeated: refused below as not one id
    const id = normalizeDeviceId(raw);
    if (!id) throw badRequest("invalid_device_id", `${src.name} must be ${DEVICE_ID_RULE}`);
    claims.push({ id, from: src.name, source: src.name });
  }
  if (basicUser !== null) {
    const id = normalizeDeviceId(basicUser);
    if (!id) {
      throw badRequest(
        "invalid_device_id",
        `the HTTP Basic user name is the device id and must be ${DEVICE_ID_RULE} (write a MAC without colons, e.g. 246f28aabbcc); leave it empty with a fleet key`,
      );
    }
    claims.push({ id, from: "the HTTP Basic user name", source: "basic-user" });
  }
  const first = claims[0];
  if (!first) return null;
  const other = claims.find((c) => c.id !== first.id);
  if (other) {
    throw badRequest("conflicting_device_id", `${first.from} names device ${first.id} but ${other.from} names ${other.id}`);
  }
  return { id: first.id, source: first.source };
}

async function isOperatorToken(ctx: Pick<Context, "credentials">, s: string | undefined): Promise<boolean> {
  return Boolean(s && looksLikeJwt(s) && (await ctx.credentials.verifyOperatorToken(s)).ok);
}

/** What authentication reads from a device request: its target (for the query) and its headers, as Node parsed them. */
export interface DeviceCredentialRequest {
  url: string;
  headers: IncomingHttpHeaders;
}

/**
 * Authenticates a device request; throws the HttpError to answer otherwise (an AuthChallenge when no credential
 * was presented at all).
 */
function authenticateDevice(ctx: Pick<Context, "credentials" | "devices">, req: DeviceCredentialRequest): MaybePromise<DeviceIdentity> {
  refuseQueryCredentials(req.url);
  const presented = presentedKey(req.headers);
  if (!presented) return refuseWithoutKey(ctx, req.headers.authorization ?? "");
  const { key } = presented;
  // An operator token is longer than any device key (and is answered with 403 below, so its sender learns why).
  if (key.length > (looksLikeJwt(key) ? MAX_TOKEN_LEN : MAX_KEY_LEN)) throw unauthorized("invalid_credential", INVALID_KEY);
  const claim = claimedDeviceId(req.headers, presented.basicUser);
  const deviceId = claim?.id ?? null;
  const idSource = claim?.source;

  if (key.startsWith(DEVICE_KEY_PREFIX)) {
    if (!deviceId) {
      throw badRequest(
        "device_id_required",
        "a device key must be sent with the device id it belongs to (X-Device-Id, x-ESP32-STA-MAC or the HTTP Basic user name)",
      );
    }
    // Synchronous on SQLite: a device's poll is authenticated without waiting for a promise.
    const device = ctx.devices.lookup(deviceId);
    return device instanceof Promise
      ? device.then((d) => deviceKeyIdentity(ctx, key, deviceId, idSource, d))
      : deviceKeyIdentity(ctx, key, deviceId, idSource, device);
  }
  return authenticateOtherKey(ctx, key, deviceId, idSource);
}

/** A device key checked against its device's row: provisioned, the key of its current generation, not revoked. */
function deviceKeyIdentity(
  ctx: Pick<Context, "credentials">,
  key: string,
  deviceId: string,
  idSource: IdSource | undefined,
  device: DeviceRow | undefined,
): DeviceIdentity {
  if (!device?.provisioned_at || !safeEqual(key, ctx.credentials.deviceApiKey(deviceId, device.key_generation))) {
    throw unauthorized("invalid_credential", "the API key is not valid for this device; send the key its provisioning gave it (ota device provision)");
  }
  if (device.revoked_at) throw unauthorized("credential_revoked", "this device's key has been revoked; provision the device again to give it a new key");
  return { kind: "device", id: deviceId, idSource, generation: device.key_generation, chip: device.chip, row: device };
}

/** No key presented: a challenge, unless a bearer token came instead (a guess, or an operator token in the wrong place). */
async function refuseWithoutKey(ctx: Pick<Context, "credentials">, authorization: string): Promise<never> {
  if (!/^Bearer\s+\S/i.test(authorization)) {
    throw new AuthChallenge("missing_credential", "send a device or fleet API key in the X-API-Key header or as the HTTP Basic password");
  }
  if (await isOperatorToken(ctx, /^Bearer\s+(\S+)$/i.exec(authorization)?.[1])) {
    throw forbidden("wrong_credential_kind", "operator tokens cannot be used on the device API; send a device key in X-API-Key");
  }
  // A token was presented, so it was a guess (perhaps at an operator token): it counts like a wrong key.
  throw unauthorized("invalid_credential", "a bearer token is not a device credential; send a device or fleet API key in X-API-Key or as the HTTP Basic password");
}

/** A fleet key, or anything else (an operator token gets 403, so its sender learns why). */
async function authenticateOtherKey(
  ctx: Pick<Context, "credentials" | "devices">,
  key: string,
  deviceId: string | null,
  idSource: IdSource | undefined,
): Promise<DeviceIdentity> {
  if (key.startsWith(FLEET_KEY_PREFIX)) {
    const fleet = await ctx.credentials.verifyFleetKey(key);
    if (!fleet.ok && fleet.revoked) throw unauthorized("credential_revoked", "this fleet key has been revoked; use another one (an admin creates one with ota apikey create)");
    if (!fleet.ok) throw unauthorized("invalid_credential", INVALID_KEY);
    if (!deviceId) return { kind: "fleet", id: null, idSource, generation: 0, chip: null };
    const device = (await ctx.devices.get(deviceId)) ?? null;
    refuseFleetKeyFor(device);
    return { kind: "fleet", id: deviceId, idSource, generation: device?.key_generation ?? 0, chip: device?.chip ?? null, row: device };
  }

  if (await isOperatorToken(ctx, key)) {
    throw forbidden("wrong_credential_kind", "operator tokens cannot be used on the device API; send a device key in X-API-Key");
  }
  throw unauthorized("invalid_credential", INVALID_KEY);
}

/**
 * Authenticates every request of the device API. A wrong or revoked credential is counted as a failure the
 * moment it is found (and answered 429 instead of 401 once its address is over the limit); a challenge is not:
 * nothing was presented, so nothing was guessed.
 */
export function deviceAuth(ctx: Pick<Context, "credentials" | "devices">, recordFailure: RecordAuthFailure): RequestHandler {
  const failed = (req: DeviceCredentialRequest & Parameters<RecordAuthFailure>[0], e: unknown): never => {
    if (e instanceof HttpError && e.status === 401 && !(e instanceof AuthChallenge)) throw recordFailure(req, e as HttpError);
    throw e;
  };
  return (req, _res, next) => {
    let identity: MaybePromise<DeviceIdentity>;
    try {
      identity = authenticateDevice(ctx, req);
    } catch (e) {
      return failed(req, e);
    }
    if (identity instanceof Promise) {
      return identity.then(
        (id) => {
          req.device = id;
          next();
        },
        (e: unknown) => failed(req, e),
      );
    }
    req.device = identity;
    next();
  };
}

/** For a body that names a device: the authenticated caller must be allowed to speak for it. */
export async function assertMaySpeakFor(ctx: Pick<Context, "devices">, caller: NonNullable<Express.Request["device"]>, deviceId: string) {
  if (caller.id && caller.id !== deviceId) {
    throw forbidden("device_mismatch", `this request is authenticated for device ${caller.id}, not ${deviceId}`);
  }
  if (caller.kind === "fleet" && !caller.id) refuseFleetKeyFor((await ctx.devices.get(deviceId)) ?? null);
}

/** A fleet key may speak only for ids that have no key of their own and were never revoked. */
function refuseFleetKeyFor(device: DeviceRow | null): void {
  if (!device) return;
  if (device.revoked_at) {
    throw forbidden("device_revoked", `device ${device.id} has been revoked: no key may speak for it; provision it again to give it a new key`);
  }
  if (device.provisioned_at) {
    throw forbidden("device_key_required", `device ${device.id} is provisioned: it must use its own key, not a fleet key`);
  }
}
