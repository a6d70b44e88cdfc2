// TLS material: real certificates from OTA_TLS_CERT/OTA_TLS_KEY, or development ones that
// generate-certs.sh makes in the certificate folder the first time the server starts.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "pino";
import type { Config } from "../config/config";
import { projectRoot } from "../../paths";

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
}

export function ensureCertificates(config: Config, log: Logger): TlsMaterial {
  const { cert, key, generated } = config.tls;
  if (generated && !(fs.existsSync(cert) && fs.existsSync(key))) {
    const script = path.join(projectRoot(), "generate-certs.sh");
    log.info({ dir: config.certDir }, "no TLS certificate yet: generating a development CA and server certificate");
    const r = spawnSync("bash", [script, "--dir", config.certDir], { encoding: "utf8" });
    if (r.status !== 0) {
      throw new Error(
        `generate-certs.sh failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout || r.error?.message || "").trim()}; ` +
          "run it by hand, or set OTA_TLS_CERT and OTA_TLS_KEY",
      );
    }
  }
  const read = (file: string, variable: string) => {
    try {
      return fs.readFileSync(file);
    } catch (e) {
      throw new Error(`${variable}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { cause: e });
    }
  };
  return {
    cert: read(cert, generated ? "OTA_CERT_DIR" : "OTA_TLS_CERT"),
    key: read(key, generated ? "OTA_CERT_DIR" : "OTA_TLS_KEY"),
  };
}
