#!/usr/bin/env node
// Runs `npm ci` when node_modules is missing or older than package-lock.json, so that
// `npm start` and `npm test` work on a fresh clone without a separate install step.
"use strict";
const fs = require("fs");
const path = require("path");
const { spawnSync } = require("child_process");

const root = path.resolve(__dirname, "..");
const lock = path.join(root, "package-lock.json");
const marker = path.join(root, "node_modules", ".package-lock.json");

function mtime(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

const installed = mtime(marker);
if (installed >= 0 && installed >= mtime(lock)) process.exit(0);

console.error(installed < 0 ? "node_modules is missing: running npm ci" : "package-lock.json changed: running npm ci");
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const r = spawnSync(npm, ["ci"], { cwd: root, stdio: "inherit" });
if (r.status !== 0) {
  console.error("npm ci failed; fix the error above and run `npm ci` by hand");
  process.exit(r.status || 1);
}
