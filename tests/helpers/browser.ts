// Debian's Chromium driven by playwright-core, for the dashboard's end-to-end tests: a page that may reach only
// the test server (any other request is refused and recorded), with the console's content-policy violations and
// page errors recorded, and screenshots kept in the test's folder (and in OTA_SCREENSHOTS, relative to the
// project, when set: `npm run screenshots` writes docs/screenshots that way).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { ROOT } from "./server";

const CHROMIUM = process.env.OTA_CHROMIUM ?? "/usr/bin/chromium";
const HAS_CHROMIUM = fs.existsSync(CHROMIUM);

/**
 * `describe`, or `describe.skip` when Chromium is not installed; under CI=true a missing Chromium fails the file
 * instead (.ci/run installs it).
 */
export function describeWithChromium(name: string, fn: () => void): void {
  if (HAS_CHROMIUM) return describe(name, fn);
  if (process.env.CI) {
    return describe(name, () => {
      it("needs Chromium", () => {
        throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (.ci/run does)`);
      });
    });
  }
  return describe.skip(`${name} (no ${CHROMIUM})`, fn);
}

/** Builds the dashboard into dist/dashboard (esbuild: well under a second), so that the test serves this source. */
export function buildDashboard(): void {
  execFileSync(process.execPath, [path.join(ROOT, "scripts/build-dashboard.js")], { stdio: "inherit" });
}

export interface Browsing {
  browser: Browser;
  /** A new tab of its own (no shared sessionStorage) on the server. */
  newPage(): Promise<Page>;
  /** Requests to anywhere but the server (refused). */
  foreign: string[];
  /** Content-policy violations the console reported, and uncaught page errors (answers refused on purpose, such as a 401, are not problems). */
  problems: string[];
  /** Saves a PNG of the page as `name`.png; returns its path in the test folder. */
  shot(page: Page, name: string): Promise<string>;
  close(): Promise<void>;
}

export async function openBrowser(serverUrl: string, shotsDir: string): Promise<Browsing> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  const foreign: string[] = [];
  const problems: string[] = [];
  const contexts: BrowserContext[] = [];
  const origin = new URL(serverUrl).origin;
  const extra = process.env.OTA_SCREENSHOTS ? path.resolve(ROOT, process.env.OTA_SCREENSHOTS) : null;
  fs.mkdirSync(shotsDir, { recursive: true });
  if (extra) fs.mkdirSync(extra, { recursive: true });
  return {
    browser,
    foreign,
    problems,
    async newPage() {
      const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 }, baseURL: serverUrl, locale: "en-GB", timezoneId: "UTC" });
      contexts.push(context);
      await context.route("**/*", (route) => {
        const url = route.request().url();
        if (new URL(url).origin === origin) return route.continue();
        foreign.push(url);
        return route.abort("blockedbyclient");
      });
      const page = await context.newPage();
      page.on("console", (m) => {
        if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
      });
      page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      return page;
    },
    async shot(page, name) {
      const file = path.join(shotsDir, `${name}.png`);
      await page.screenshot({ path: file, fullPage: true });
      if (extra) fs.copyFileSync(file, path.join(extra, `${name}.png`));
      return file;
    },
    async close() {
      for (const c of contexts) await c.close();
      await browser.close();
    },
  };
}
