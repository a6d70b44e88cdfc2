// A device-like HTTPS client for the bench's own checks (not the load): pinned CA, device key, HMAC check.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import https from "node:https";
import type { BenchDevice } from "./fleet";

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export function get(port: number, ca: Buffer, path: string, headers: Record<string, string>, method = "GET", body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "127.0.0.1", servername: "localhost", port, path, method, headers, ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Polls the manifest as `device` and checks its HMAC and nonce, as the agent would. Returns the body. */
export async function verifiedManifest(port: number, ca: Buffer, device: BenchDevice): Promise<Buffer> {
  const nonce = randomBytes(12).toString("base64url");
  const r = await get(port, ca, "/firmware/manifest", { "X-API-Key": device.apiKey, "X-Device-Id": device.id, "X-Nonce": nonce });
  if (r.status !== 200) throw new Error(`manifest poll answered ${r.status}: ${r.body.toString().slice(0, 300)}`);
  const mac = Buffer.from(String(r.headers["x-manifest-hmac"] ?? ""), "hex");
  const want = createHmac("sha256", device.hmacKey).update(r.body).digest();
  if (mac.length !== want.length || !timingSafeEqual(mac, want)) throw new Error("manifest HMAC does not verify: the bench is not measuring real manifests");
  const m = JSON.parse(r.body.toString("utf8")) as { nonce?: unknown; device_id?: unknown };
  if (m.nonce !== nonce || m.device_id !== device.id) throw new Error("manifest does not echo the nonce and device id");
  return r.body;
}
