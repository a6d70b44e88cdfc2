#!/usr/bin/env node
"use strict";
const path = require("path");
const entry = path.join(__dirname, "..", "dist", "server", "cli", "ota.js");
try {
  require.resolve(entry);
} catch {
  console.error("ota: the CLI is not built yet. Run `npm ci` (or `npm run build`) in " + path.join(__dirname, ".."));
  process.exit(1);
}
require(entry);
