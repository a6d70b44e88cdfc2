// Fleet API keys (for devices without their own key, and for curl) and operator tokens (JWTs with a role).
// Both are stored only as hashes / ids; a secret is shown once, when it is created. Both are checked against
// the database on every request, so a revocation (from the API or from an `ota` command in another process)
// holds from the next request on.
import { randomUUID } from "node:crypto";
import jwt from "jsonwebtoken";
import type { Kysely } from "kysely";
import { z } from "zod";
import type { Database, Role } from "../store/schema";
import { deviceApiKey, deviceMacKey, deviceMqttPassword, fleetManifestMacKey, newFleetKey, operatorSigningKey, rolloutBucketKey, safeEqual, sha256Hex } from "./keys";

export const ROLES: readonly Role[] = ["viewer", "releaser", "admin"];
const ISSUER = "esp32-ota";
const AUDIENCE = "operator-api";

/** A fleet key's id: the first 8 characters after `otafleet_` (older or future keys: up to 64 of A-Z a-z 0-9 _ -). */
export const fleetKeyIdSchema = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, "a fleet key id is 1-64 characters of A-Z a-z 0-9 _ - (ota apikey list shows them)")
  .describe("fleet key id, as `ota apikey list` shows it");

/** An operator token's id: its `jti`, a UUID. */
export const tokenIdSchema = z
  .string()
  .regex(/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/, "a token id is a UUID (ota token list shows them)")
  .transform((v) => v.toLowerCase())
  .describe("token id (the JWT's jti), as `ota token list` shows it");

/** A fleet key as it may be shown: never the key or its hash. */
export interface FleetKeyInfo {
  id: string;
  label: string;
  created_at: string;
  revoked_at: string | null;
}

/** An operator token as it may be shown: never the token. */
export interface OperatorTokenInfo {
  id: string;
  subject: string;
  role: Role;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
}

/** What a revocation found: the credential as it is now, and whether it had been revoked before. */
export interface Revoked<T> {
  info: T;
  alreadyRevoked: boolean;
}

export type FleetKeyCheck = { ok: true; id: string; label: string } | { ok: false; revoked: boolean };

export interface OperatorIdentity {
  subject: string;
  role: Role;
  jti: string;
}

export type TokenCheck =
  | { ok: true; identity: OperatorIdentity }
  | { ok: false; code: "invalid_token" | "token_expired" | "token_revoked"; message: string };

export function roleAtLeast(have: Role, need: Role): boolean {
  return ROLES.indexOf(have) >= ROLES.indexOf(need);
}

/** A JWT has three base64url parts; device keys never look like one. */
export function looksLikeJwt(s: string): boolean {
  return /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(s);
}

export class Credentials {
  private readonly signingKey: Buffer;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly master: Buffer,
  ) {
    this.signingKey = operatorSigningKey(master);
  }

  async createFleetKey(label: string): Promise<{ key: string; id: string }> {
    const { key, id } = newFleetKey();
    await this.db
      .insertInto("api_keys")
      .values({ id, label, key_hash: sha256Hex(key), created_at: new Date().toISOString() })
      .execute();
    return { key, id };
  }

  /** Read from the database on every call: a key revoked a moment ago, by any process, is refused. */
  async verifyFleetKey(key: string): Promise<FleetKeyCheck> {
    const hash = sha256Hex(key);
    const row = await this.db
      .selectFrom("api_keys")
      .select(["id", "label", "key_hash", "revoked_at"])
      .where("key_hash", "=", hash)
      .executeTakeFirst();
    if (!row || !safeEqual(row.key_hash, hash)) return { ok: false, revoked: false };
    if (row.revoked_at) return { ok: false, revoked: true };
    return { ok: true, id: row.id, label: row.label };
  }

  /** Every fleet key, newest first (never the key or its hash). */
  async listFleetKeys(): Promise<FleetKeyInfo[]> {
    return this.db
      .selectFrom("api_keys")
      .select(["id", "label", "created_at", "revoked_at"])
      .orderBy("created_at", "desc")
      .orderBy("id")
      .execute();
  }

  /** Revokes a fleet key from its next use on; undefined for an unknown id. A second revocation keeps the first time. */
  async revokeFleetKey(id: string): Promise<Revoked<FleetKeyInfo> | undefined> {
    const r = await this.db
      .updateTable("api_keys")
      .set({ revoked_at: new Date().toISOString() })
      .where("id", "=", id)
      .where("revoked_at", "is", null)
      .executeTakeFirst();
    const info = await this.db.selectFrom("api_keys").select(["id", "label", "created_at", "revoked_at"]).where("id", "=", id).executeTakeFirst();
    return info && { info, alreadyRevoked: Number(r.numUpdatedRows) === 0 };
  }

  /** Every operator token, newest first (never the token). */
  async listOperatorTokens(): Promise<OperatorTokenInfo[]> {
    return this.db
      .selectFrom("operator_tokens")
      .select(["jti as id", "subject", "role", "created_at", "expires_at", "revoked_at"])
      .orderBy("created_at", "desc")
      .orderBy("jti")
      .execute();
  }

  /** Revokes an operator token from its next use on; undefined for an unknown id. A second revocation keeps the first time. */
  async revokeOperatorToken(jti: string): Promise<Revoked<OperatorTokenInfo> | undefined> {
    const r = await this.db
      .updateTable("operator_tokens")
      .set({ revoked_at: new Date().toISOString() })
      .where("jti", "=", jti)
      .where("revoked_at", "is", null)
      .executeTakeFirst();
    const info = await this.db
      .selectFrom("operator_tokens")
      .select(["jti as id", "subject", "role", "created_at", "expires_at", "revoked_at"])
      .where("jti", "=", jti)
      .executeTakeFirst();
    return info && { info, alreadyRevoked: Number(r.numUpdatedRows) === 0 };
  }

  async issueOperatorToken(subject: string, role: Role, expiresInDays?: number): Promise<{ token: string; jti: string; expiresAt: string | null }> {
    const jti = randomUUID();
    const createdAt = new Date();
    const expiresAt = expiresInDays ? new Date(createdAt.getTime() + expiresInDays * 86400_000) : null;
    await this.db
      .insertInto("operator_tokens")
      .values({
        jti,
        subject,
        role,
        created_at: createdAt.toISOString(),
        expires_at: expiresAt?.toISOString() ?? null,
        revoked_at: null,
      })
      .execute();
    const token = jwt.sign({ role }, this.signingKey, {
      algorithm: "HS256",
      subject,
      jwtid: jti,
      issuer: ISSUER,
      audience: AUDIENCE,
      ...(expiresInDays ? { expiresIn: `${expiresInDays}d` } : {}),
    });
    return { token, jti, expiresAt: expiresAt?.toISOString() ?? null };
  }

  /** Checks the signature and claims, then the token's record, read from the database on every call (revocation, expiry). */
  async verifyOperatorToken(token: string): Promise<TokenCheck> {
    let claims: jwt.JwtPayload;
    try {
      const decoded = jwt.verify(token, this.signingKey, { algorithms: ["HS256"], issuer: ISSUER, audience: AUDIENCE });
      if (typeof decoded === "string") throw new Error("unexpected payload");
      claims = decoded;
    } catch (e) {
      if (e instanceof jwt.TokenExpiredError) {
        return { ok: false, code: "token_expired", message: "the operator token has expired; ask an admin for a new one" };
      }
      return { ok: false, code: "invalid_token", message: "the bearer token is not a valid operator token" };
    }
    const row = claims.jti
      ? await this.db.selectFrom("operator_tokens").selectAll().where("jti", "=", claims.jti).executeTakeFirst()
      : undefined;
    if (!row || row.subject !== claims.sub || row.role !== claims.role) {
      return { ok: false, code: "invalid_token", message: "the bearer token is not a valid operator token" };
    }
    if (row.revoked_at) return { ok: false, code: "token_revoked", message: "this operator token has been revoked; ask an admin for a new one" };
    if (row.expires_at && Date.parse(row.expires_at) <= Date.now()) {
      return { ok: false, code: "token_expired", message: "the operator token has expired; ask an admin for a new one" };
    }
    return { ok: true, identity: { subject: row.subject, role: row.role, jti: row.jti } };
  }

  deviceApiKey(deviceId: string, generation: number): string {
    return deviceApiKey(this.master, deviceId, generation);
  }

  deviceMacKey(deviceId: string, generation: number): Buffer {
    return deviceMacKey(this.master, deviceId, generation);
  }

  /** The device's password at the MQTT broker (docs/operations.md#pushed-update-notices-mqtt). */
  deviceMqttPassword(deviceId: string, generation: number): string {
    return deviceMqttPassword(this.master, deviceId, generation);
  }

  fleetManifestMacKey(generation: number): Buffer {
    return fleetManifestMacKey(this.master, generation);
  }

  rolloutBucketKey(): Buffer {
    return rolloutBucketKey(this.master);
  }

  async hasAny(): Promise<boolean> {
    const k = await this.db.selectFrom("api_keys").select("id").limit(1).executeTakeFirst();
    const t = await this.db.selectFrom("operator_tokens").select("jti").limit(1).executeTakeFirst();
    return Boolean(k || t);
  }
}
