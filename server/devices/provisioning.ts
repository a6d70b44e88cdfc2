// What a device needs to talk to this server: its id, its own API key and MAC key, where the server is and
// which CA to trust. The same bundle comes from `ota device provision` and from the operator API.
import fs from "node:fs";
import type { Credentials } from "../auth/credentials";
import type { Config } from "../config/config";
import type { DeviceRegistry } from "./registry";

export interface ProvisioningBundle {
  deviceId: string;
  apiKey: string;
  /** Hex. Verifies manifests: X-Manifest-HMAC = HMAC-SHA256(hmacKey, body). Never sent over the network. */
  hmacKey: string;
  keyGeneration: number;
  serverUrl: string;
  /** PEM of the CA that signed the server certificate (null when the server uses a public CA). */
  ca: string | null;
  pollInterval: number;
}

export function defaultServerUrl(config: Config): string {
  return config.publicUrl ?? `https://localhost:${config.port || 8443}`;
}

export async function provisionDevice(
  deps: { config: Config; devices: DeviceRegistry; credentials: Credentials },
  deviceId: string,
  opts: { rotate?: boolean; serverUrl?: string | undefined; chip?: string | undefined } = {},
): Promise<ProvisioningBundle> {
  const generation = await deps.devices.provision(deviceId, { rotate: opts.rotate, chip: opts.chip });
  const caFile = deps.config.tls.ca;
  const ca = caFile && fs.existsSync(caFile) ? fs.readFileSync(caFile, "utf8") : null;
  return {
    deviceId,
    apiKey: deps.credentials.deviceApiKey(deviceId, generation),
    hmacKey: deps.credentials.deviceMacKey(deviceId, generation).toString("hex"),
    keyGeneration: generation,
    serverUrl: (opts.serverUrl ?? defaultServerUrl(deps.config)).replace(/\/+$/, ""),
    ca,
    pollInterval: deps.config.pollInterval,
  };
}
