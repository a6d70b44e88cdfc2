// What a device needs to talk to this server: its id, its own API key and MAC key, where the server is and
// which CA to trust. The same bundle comes from `ota device provision` and from the operator API.
import fs from "node:fs";
import type { Credentials } from "../../infra/auth/credentials";
import type { Config } from "../../infra/config/config";
import type { DeviceRegistry } from "./registry";
import { mqttNameOf } from "../notify/desired";
import { MAX_SERVER_URL_LENGTH, SERVER_URL_TOO_LONG } from "../../infra/config/server-url";

// Also offered from here, beside provisionDevice, for the callers that check a URL before they provision.
export { MAX_SERVER_URL_LENGTH, SERVER_URL_TOO_LONG };

export interface ProvisioningBundle {
  deviceId: string;
  apiKey: string;
  /** Hex. Verifies manifests: X-Manifest-HMAC = HMAC-SHA256(hmacKey, body). Never sent over the network. */
  hmacKey: string;
  keyGeneration: number;
  /** The device's user name and password at the MQTT broker (docs/operations.md#pushed-update-notices-mqtt). */
  mqttUser: string;
  mqttPassword: string;
  serverUrl: string;
  /** PEM of the CA that signed the server certificate (null when the server uses a public CA). */
  ca: string | null;
  pollInterval: number;
}

function defaultServerUrl(config: Config): string {
  return config.publicUrl ?? `https://localhost:${config.port || 8443}`;
}

export async function provisionDevice(
  deps: { config: Config; devices: Pick<DeviceRegistry, "provision">; credentials: Pick<Credentials, "deviceApiKey" | "deviceMacKey" | "deviceMqttPassword"> },
  deviceId: string,
  opts: { rotate?: boolean; serverUrl?: string | undefined; chip?: string | undefined } = {},
): Promise<ProvisioningBundle> {
  const serverUrl = (opts.serverUrl ?? defaultServerUrl(deps.config)).replace(/\/+$/, "");
  // Checked before anything is stored: a bundle the agent cannot keep would crash it at every boot.
  if (Buffer.byteLength(serverUrl) > MAX_SERVER_URL_LENGTH) throw new ServerUrlTooLong(serverUrl);
  const generation = await deps.devices.provision(deviceId, { rotate: opts.rotate, chip: opts.chip });
  const caFile = deps.config.tls.ca;
  const ca = caFile && fs.existsSync(caFile) ? fs.readFileSync(caFile, "utf8") : null;
  return {
    deviceId,
    apiKey: deps.credentials.deviceApiKey(deviceId, generation),
    hmacKey: deps.credentials.deviceMacKey(deviceId, generation).toString("hex"),
    keyGeneration: generation,
    mqttUser: mqttNameOf(deviceId),
    mqttPassword: deps.credentials.deviceMqttPassword(deviceId, generation),
    serverUrl,
    ca,
    pollInterval: deps.config.pollInterval,
  };
}

class ServerUrlTooLong extends Error {
  constructor(url: string) {
    super(`the server URL (${Buffer.byteLength(url)} characters) ${SERVER_URL_TOO_LONG}`);
  }
}
