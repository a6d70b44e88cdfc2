// Fleet API keys (for devices without their own key, and for curl) and operator tokens (JWTs with a role).
// Both are stored only as hashes / ids; a secret is shown once, when it is created.
import { randomUUID } from "node:crypto";
import jwt from "jsonwebtoken";
import type { Kysely } from "kysely";
import type { Database, Role } from "../store/schema";
import { deviceApiKey, deviceMacKey, fleetManifestMacKey, newFleetKey, operatorSigningKey, rolloutBucketKey, safeEqual, sha256Hex } from "./keys";

export const ROLES: readonly Role[] = ["viewer", "releaser", "admin"];
const ISSUER = "esp32-ota";
const AUDIENCE = "operator-api";

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

  async verifyFleetKey(key: string): Promise<{ id: string; label: string } | null> {
    const hash = sha256Hex(key);
    const row = await this.db
      .selectFrom("api_keys")
      .select(["id", "label", "key_hash", "revoked_at"])
      .where("key_hash", "=", hash)
      .executeTakeFirst();
    if (!row || row.revoked_at || !safeEqual(row.key_hash, hash)) return null;
    return { id: row.id, label: row.label };
  }

  async revokeFleetKey(id: string): Promise<boolean> {
    const r = await this.db
      .updateTable("api_keys")
      .set({ revoked_at: new Date().toISOString() })
      .where("id", "=", id)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async issueOperatorToken(subject: string, role: Role, expiresInDays?: number): Promise<{ token: string; jti: string }> {
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
    return { token, jti };
  }

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
    if (row.revoked_at) return { ok: false, code: "token_revoked", message: "this operator token has been revoked" };
    return { ok: true, identity: { subject: row.subject, role: row.role, jti: row.jti } };
  }

  deviceApiKey(deviceId: string, generation: number): string {
    return deviceApiKey(this.master, deviceId, generation);
  }

  deviceMacKey(deviceId: string, generation: number): Buffer {
    return deviceMacKey(this.master, deviceId, generation);
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
