#!/usr/bin/env node
"use strict";
const path = require("path");
const entry = path.join(__dirname, "..", "dist", "server", "cli", "ota.js");
let cli;
try {
  cli = require(entry);
} catch (e) {
  if (e && e.code === "MODULE_NOT_FOUND" && String(e.message).includes(entry)) {
    console.error("ota: the CLI is not built yet. Run `npm ci` (or `npm run build`) in " + path.join(__dirname, ".."));
    process.exit(1);
  }
  throw e;
}
cli.run(process.argv.slice(2)).then((code) => process.exit(code));
