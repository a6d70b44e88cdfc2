// The eFuses an update depends on, as ESP-IDF uses them: up to 3 Secure Boot v2 public key digests (each
// revocable: esp_ota_revoke_secure_boot_public_key), whether secure boot is on, and the anti-rollback
// secure_version (CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK). eFuse bits only ever go from 0 to 1: a digest once
// revoked stays revoked and secure_version never goes down. They survive power cuts (kept with the flash).
import { MAX_SIGNATURE_BLOCKS, type TrustedKey } from "../../../server/esp";

export interface EfuseOptions {
  /** Key digests burnt at the factory (at most 3). None: app signatures are not checked (as today). */
  trustedKeys?: readonly TrustedKey[];
  /** Secure boot on: the bootloader also refuses to start an app not signed by a trusted key. */
  secureBoot?: boolean;
  /** secure_version burnt at the factory (default 0). */
  secureVersion?: number;
}

export class Efuse {
  private readonly keys: TrustedKey[];
  private readonly revoked: boolean[];
  readonly secureBoot: boolean;
  private version: number;

  constructor(o: EfuseOptions = {}) {
    const keys = o.trustedKeys ?? [];
    if (keys.length > MAX_SIGNATURE_BLOCKS) throw new Error(`a chip holds at most ${MAX_SIGNATURE_BLOCKS} trusted key digests, ${keys.length} given`);
    if (o.secureBoot && keys.length === 0) throw new Error("secure boot needs at least one trusted key digest");
    this.keys = [...keys];
    this.revoked = keys.map(() => false);
    this.secureBoot = o.secureBoot ?? false;
    this.version = o.secureVersion ?? 0;
  }

  /** Images must be signed (CONFIG_SECURE_SIGNED_ON_UPDATE): some key digest was burnt. */
  get signedApps(): boolean {
    return this.keys.length > 0;
  }

  /** The digests an image may be signed with: burnt and not revoked. */
  trustedKeys(): TrustedKey[] {
    return this.keys.filter((_, i) => !this.revoked[i]);
  }

  /** Digest slots burnt (revoked or not). */
  get digestCount(): number {
    return this.keys.length;
  }

  /** The digest in slot `index` (0..2) while it is burnt and not revoked, else undefined. */
  trustedAt(index: number): TrustedKey | undefined {
    return this.revoked[index] === false ? this.keys[index] : undefined;
  }

  /** Bit i set: digest slot i is burnt and not revoked. */
  get trustedMask(): number {
    return this.revoked.reduce((m, r, i) => (r ? m : m | (1 << i)), 0);
  }

  /** Revokes digest `index` (0..2) for good. */
  revoke(index: number): void {
    if (!this.keys[index]) throw new Error(`no key digest ${index} to revoke`);
    this.revoked[index] = true;
  }

  isRevoked(index: number): boolean {
    return this.revoked[index] ?? false;
  }

  get secureVersion(): number {
    return this.version;
  }

  /** esp_efuse_check_secure_version */
  checkSecureVersion(v: number): boolean {
    return v >= this.version;
  }

  /** esp_efuse_update_secure_version: only ever raised. */
  updateSecureVersion(v: number): void {
    if (v > this.version) this.version = v;
  }
}
