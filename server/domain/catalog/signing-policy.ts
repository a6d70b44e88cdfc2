// What the server says about its signing policy (OTA_SIGNING_KEYS): in its start log and in GET /api/v1.
import type { Config } from "../../infra/config/config";

export interface SigningPolicyInfo {
  /** Whether images must carry a Secure Boot v2 signature block that verifies under a trusted key. */
  checked: boolean;
  /** The eFuse digests (hex) of the trusted public keys; empty when images are not checked. */
  trustedKeyDigests: string[];
  note: string;
}

export function signingPolicyInfo(config: Pick<Config, "signingKeys">): SigningPolicyInfo {
  const keys = config.signingKeys;
  if (!keys) {
    return {
      checked: false,
      trustedKeyDigests: [],
      note: "images are not signature-checked: any valid app image is accepted; set OTA_SIGNING_KEYS to accept only images signed by trusted keys",
    };
  }
  return {
    checked: true,
    trustedKeyDigests: keys.map((k) => k.digest.toString("hex")),
    note: `images are accepted only when signed (Secure Boot v2) by one of ${keys.length} trusted key${keys.length > 1 ? "s" : ""} (OTA_SIGNING_KEYS)`,
  };
}
