#!/usr/bin/env node
// Builds the operator dashboard (dashboard/src) into dist/dashboard: one script and one style sheet built by
// esbuild, and the page that loads them. Run by `npm run build`; the server serves the folder at /.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const esbuild = require("esbuild");

const root = path.resolve(__dirname, "..");
const src = path.join(root, "dashboard", "src");
const out = path.join(root, "dist", "dashboard");

async function main() {
  fs.mkdirSync(out, { recursive: true });
  await esbuild.build({
    entryPoints: { app: path.join(src, "main.tsx"), style: path.join(src, "style.css") },
    outdir: out,
    bundle: true,
    minify: true,
    sourcemap: "linked",
    format: "iife",
    target: ["chrome109", "firefox115", "safari16"],
    jsx: "automatic",
    jsxImportSource: "preact",
    legalComments: "none",
    logLevel: "warning",
  });
  fs.copyFileSync(path.join(src, "index.html"), path.join(out, "index.html"));
  fs.copyFileSync(path.join(src, "favicon.svg"), path.join(out, "favicon.svg"));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
