// A second reference: bare Node.js HTTPS answering the static manifest (and, given a firmware folder, its files
// from memory in one write), with the same certificate and TLS settings as our server. It shows how much of any
// gap to nginx is Node itself rather than our code. With BARE_APP=express the same answers come from an Express
// application with one route (`npm run bench -- --bare express`): how much of the rest is Express's own.
//   node dist/bench/bare-https.js <cert> <key> <manifest.json> [<www-firmware-dir>]   (prints its port)
import { constants } from "node:crypto";
import fs from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import path from "node:path";
import express from "express";

const [cert, key, manifest, firmwareDir] = process.argv.slice(2);
if (!cert || !key || !manifest) throw new Error("usage: bare-https.js <cert> <key> <manifest.json> [<www-firmware-dir>]");
const body = fs.readFileSync(manifest);
// /firmware/<relative path> -> bytes, read once at start.
const files = new Map<string, Buffer>();
const walk = (dir: string, prefix: string): void => {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) walk(path.join(dir, e.name), `${prefix}${e.name}/`);
    else files.set(`/firmware/${prefix}${e.name}`, fs.readFileSync(path.join(dir, e.name)));
  }
};
if (firmwareDir) walk(firmwareDir, "");
const answer = (req: IncomingMessage, res: ServerResponse): void => {
  const file = files.get(req.url ?? "");
  if (file) {
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": file.length });
    res.end(file);
    return;
  }
  res.writeHead(200, { "Content-Type": "application/json", "Content-Length": body.length });
  res.end(body);
};

function expressApp(): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.get("/{*path}", answer);
  return app;
}

const server = https.createServer(
  { cert: fs.readFileSync(cert), key: fs.readFileSync(key), minVersion: "TLSv1.2", secureOptions: constants.SSL_OP_NO_TICKET },
  process.env.BARE_APP === "express" ? expressApp() : answer,
);
server.keepAliveTimeout = 5_000;
server.listen(0, "127.0.0.1", () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
