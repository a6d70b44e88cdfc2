// Device API authentication: X-API-Key carries either a device's own key (with X-Device-Id) or a fleet key.
// Operator tokens are refused here with 403, so an operator credential cannot act as a device.
import type { RequestHandler } from "express";
import { looksLikeJwt } from "../auth/credentials";
import { DEVICE_KEY_PREFIX, FLEET_KEY_PREFIX, safeEqual } from "../auth/keys";
import type { Context } from "../context";
import { normalizeDeviceId, DEVICE_ID_RULE } from "../devices/device-id";
import { badRequest, forbidden, HttpError, unauthorized } from "../http/errors";
import type { DeviceIdentity } from "../http/express-types";

const MAX_KEY_LEN = 256;

/** Parses X-Device-Id; null when absent. */
export function headerDeviceId(value: string | undefined): string | null {
  if (value === undefined) return null;
  const id = normalizeDeviceId(value);
  if (!id) throw badRequest("invalid_device_id", `X-Device-Id must be ${DEVICE_ID_RULE}`);
  return id;
}

/** The credential headers of a device request, as sent. */
export interface DeviceCredentialHeaders {
  apiKey: string | undefined;
  authorization: string | undefined;
  deviceId: string | undefined;
}

/** Checks a device request's credentials; throws the HttpError to answer otherwise. */
export async function authenticateDevice(ctx: Context, h: DeviceCredentialHeaders): Promise<DeviceIdentity> {
  const key = h.apiKey;
  const bearer = /^Bearer\s+(\S+)$/i.exec(h.authorization ?? "")?.[1];
  if (!key) {
    if (bearer && looksLikeJwt(bearer) && (await ctx.credentials.verifyOperatorToken(bearer)).ok) {
      throw forbidden("wrong_credential_kind", "operator tokens cannot be used on the device API; send a device key in X-API-Key");
    }
    throw new HttpError(401, "missing_credential", "send a device or fleet API key in the X-API-Key header");
  }
  if (key.length > MAX_KEY_LEN) throw unauthorized("invalid_credential", "the API key is not valid");
  const deviceId = headerDeviceId(h.deviceId);

  if (key.startsWith(DEVICE_KEY_PREFIX)) {
    if (!deviceId) throw badRequest("device_id_required", "a device key must be sent with the X-Device-Id it belongs to");
    const device = await ctx.devices.get(deviceId);
    if (!device?.provisioned_at || !safeEqual(key, ctx.credentials.deviceApiKey(deviceId, device.key_generation))) {
      throw unauthorized("invalid_credential", "the API key is not valid for this device");
    }
    if (device.revoked_at) throw unauthorized("credential_revoked", "this device's key has been revoked; provision it again");
    return { kind: "device", id: deviceId, generation: device.key_generation, provisioned: true, chip: device.chip };
  }

  if (key.startsWith(FLEET_KEY_PREFIX)) {
    if (!(await ctx.credentials.verifyFleetKey(key))) throw unauthorized("invalid_credential", "the API key is not valid");
    let generation = 0;
    let chip: string | null = null;
    if (deviceId) {
      const device = await ctx.devices.get(deviceId);
      if (device?.provisioned_at && !device.revoked_at) {
        throw forbidden("device_key_required", `device ${deviceId} is provisioned: it must use its own key, not a fleet key`);
      }
      generation = device?.key_generation ?? 0;
      chip = device?.chip ?? null;
    }
    return { kind: "fleet", id: deviceId, generation, provisioned: false, chip };
  }

  if (looksLikeJwt(key) && (await ctx.credentials.verifyOperatorToken(key)).ok) {
    throw forbidden("wrong_credential_kind", "operator tokens cannot be used on the device API; send a device key in X-API-Key");
  }
  throw unauthorized("invalid_credential", "the API key is not valid");
}

export function deviceAuth(ctx: Context): RequestHandler {
  return async (req, _res, next) => {
    req.device = await authenticateDevice(ctx, {
      apiKey: req.get("x-api-key"),
      authorization: req.get("authorization"),
      deviceId: req.get("x-device-id"),
    });
    next();
  };
}

/** For a body that names a device: the authenticated caller must be allowed to speak for it. */
export async function assertMaySpeakFor(ctx: Context, caller: NonNullable<Express.Request["device"]>, deviceId: string) {
  if (caller.id && caller.id !== deviceId) {
    throw forbidden("device_mismatch", `this request is authenticated for device ${caller.id}, not ${deviceId}`);
  }
  if (caller.kind === "fleet" && !caller.id) {
    const device = await ctx.devices.get(deviceId);
    if (device?.provisioned_at && !device.revoked_at) {
      throw forbidden("device_key_required", `device ${deviceId} is provisioned: it must use its own key, not a fleet key`);
    }
  }
}
