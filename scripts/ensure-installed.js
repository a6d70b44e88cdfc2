#!/usr/bin/env node
// Runs `npm ci` when node_modules is missing or does not match package-lock.json, so that `npm start` and
// `npm test` work on a fresh clone without a separate install step. npm ci is quiet while better-sqlite3
// compiles (minutes where no prebuilt binary fits), so a line every few seconds says it is still working.
"use strict";
const fs = require("fs");
const path = require("path");
const { spawn } = require("child_process");

const root = path.resolve(__dirname, "..");
const lock = path.join(root, "package-lock.json");
const modules = path.join(root, "node_modules");
const marker = path.join(modules, ".package-lock.json");
const EVERY_MS = Number(process.env.OTA_INSTALL_PROGRESS_MS) || 10_000;

function mtime(file) {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return -1;
  }
}

/** npm's record of what it installed names the same versions as the lock (a checkout changes only the time). */
function sameContent() {
  try {
    const wanted = JSON.parse(fs.readFileSync(lock, "utf8")).packages || {};
    const have = JSON.parse(fs.readFileSync(marker, "utf8")).packages || {};
    for (const [name, p] of Object.entries(wanted)) {
      if (name === "") continue;
      const h = have[name];
      // npm leaves out optional packages for other platforms.
      if (!h) {
        if (p.optional || p.devOptional || p.peer) continue;
        return false;
      }
      if (h.version !== p.version || h.integrity !== p.integrity) return false;
    }
    return Object.keys(have).every((name) => name in wanted);
  } catch {
    return false;
  }
}

const installed = mtime(marker);
if (installed >= 0 && (installed >= mtime(lock) || sameContent())) process.exit(0);

let link = null;
try {
  if (fs.lstatSync(modules).isSymbolicLink()) link = fs.realpathSync(modules);
} catch {
  /* missing: npm ci makes it */
}
if (link) {
  // npm ci would empty the linked folder, which other checkouts may use.
  console.error(`node_modules is a link to ${link} and does not match package-lock.json; run npm ci in the checkout that owns it, not through the link`);
  process.exit(1);
}

console.error(installed < 0 ? "node_modules is missing: running npm ci" : "package-lock.json changed: running npm ci");
console.error(
  "npm ci downloads the dependencies and builds better-sqlite3's native module; where no prebuilt binary fits this Node.js and platform it compiles from source (python3, make and a C++ compiler), which can take several minutes",
);
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const started = Date.now();
const child = spawn(npm, ["ci"], { cwd: root, stdio: "inherit" });
const timer = setInterval(() => {
  console.error(`npm ci still running (${Math.round((Date.now() - started) / 1000)} s): installing dependencies and building native modules`);
}, EVERY_MS);
child.on("error", (e) => {
  clearInterval(timer);
  console.error(`cannot run npm: ${e.message}`);
  process.exit(1);
});
child.on("exit", (code, signal) => {
  clearInterval(timer);
  if (code === 0) {
    console.error(`npm ci finished in ${Math.round((Date.now() - started) / 1000)} s`);
    return;
  }
  console.error(`npm ci failed (${signal || `exit ${code}`}); fix the error above and run \`npm ci\` by hand`);
  process.exit(code || 1);
});
