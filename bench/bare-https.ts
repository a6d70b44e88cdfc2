// A second reference: bare Node.js HTTPS answering the static manifest, with the same certificate and TLS
// settings as our server. It shows how much of any gap to nginx is Node itself rather than our code.
//   node dist/bench/bare-https.js <cert> <key> <manifest.json>   (prints its port)
import { constants } from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";

const [cert, key, manifest] = process.argv.slice(2);
if (!cert || !key || !manifest) throw new Error("usage: bare-https.js <cert> <key> <manifest.json>");
const body = fs.readFileSync(manifest);
const server = https.createServer(
  { cert: fs.readFileSync(cert), key: fs.readFileSync(key), minVersion: "TLSv1.2", secureOptions: constants.SSL_OP_NO_TICKET },
  (_req, res) => {
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
    res.end(body);
  },
);
server.keepAliveTimeout = 5_000;
server.listen(0, "127.0.0.1", () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
