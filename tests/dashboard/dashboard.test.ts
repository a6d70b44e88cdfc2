// The operator dashboard in Debian's Chromium against the real server (real TLS, SQLite or PostgreSQL) and a fleet
// of emulated devices that poll and report over HTTPS: a wrong token is refused with the server's reason; a
// viewer sees the fleet by version, chip and state and no action, and the API refuses the action anyway; a releaser
// uploads an image (progress bar), makes a release, starts a rollout and watches it advance as devices succeed,
// then pause itself with its reason as devices fail, and resumes and aborts it; an admin reads the audit log; a
// token revoked while its page is open ends the session. The page loads nothing from anywhere else and breaks no
// content-policy rule. Screenshots go to the test's folder (and docs/screenshots with `npm run screenshots`).
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Page } from "playwright-core";
import { buildDashboard, describeWithChromium, openBrowser, type Browsing } from "../helpers/browser";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { inParallel, mac, offered, Operator, poll, report, writeMasterKey } from "../helpers/fleet";
import { eventually, startTestServer, tempDirs, type TestServer } from "../helpers/server";

const V1 = "v1.4.1-2-g0296947-dirty";
const V2 = "v4.1-dev-1935-g647cb62-dirty";
const SHA2 = createHash("sha256").update(fs.readFileSync(HELLO_WORLD_IDF41)).digest("hex");

describeWithChromium("operator dashboard in Chromium", () => {
  let s: TestServer;
  let b: Browsing;
  let op: Operator;
  const tokens = { viewer: "", releaser: "", admin: "" };
  /** ESP32s on V1 (the rollout's targets), a few ESP32-C3s, two devices registered but never seen. */
  const esp32 = Array.from({ length: 20 }, (_, i) => mac(i + 1, "24:6f:28"));
  const c3 = Array.from({ length: 4 }, (_, i) => mac(i + 1, "34:85:18"));
  const asV1 = { chip: "esp32", version: V1 };

  const signIn = async (page: Page, token: string) => {
    await page.goto("/");
    await page.locator("input[name=token]").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
  };
  const text = (page: Page, t: string | RegExp) => page.getByText(t).first().waitFor({ timeout: 10_000 });
  const stat = async (page: Page, label: string) => Number(await page.locator(`[data-stat="${label}"] .value`).innerText());

  beforeAll(async () => {
    buildDashboard();
    const dirs = tempDirs("ota-dashboard-");
    writeMasterKey(dirs);
    s = await startTestServer({}, dirs);
    op = new Operator(s);
    const cred = s.running.ctx.credentials;
    tokens.viewer = (await cred.issueOperatorToken("vera", "viewer")).token;
    tokens.releaser = (await cred.issueOperatorToken("rob", "releaser")).token;
    tokens.admin = s.creds.operatorToken;
    await inParallel(esp32, 6, (id) => poll(s, id, asV1));
    await inParallel(c3, 4, (id) => poll(s, id, { chip: "esp32c3", version: "v5.2.2" }));
    for (const id of ["lab-bench-1", "lab-bench-2"]) await op.ok("POST", `/devices/${id}/provision`, {});
    await report(s, { device_id: c3[0], status: "failed", reason: "write_failed", error: "flash write failed at 0x110000" });
    // A file the server refuses, to be seen with its reason.
    fs.writeFileSync(path.join(s.dirs.firmware, "notes.bin"), Buffer.alloc(4096, 0x42));
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "hello-5.2.2.bin"));
    await eventually(() => s.running.ctx.catalog.allFiles().length === 2 && s.running.ctx.catalog.allFiles().every((f) => f.status !== "incomplete"));
    b = await openBrowser(s.url, path.join(dirs.root, "screenshots"));
  }, 60_000);

  afterAll(async () => {
    await b?.close();
    await s?.close();
  });

  afterEach(() => {
    expect(b.foreign).toEqual([]);
    expect(b.problems).toEqual([]);
  });

  it("serves the page with a strict content policy, and a wrong token is refused with the server's reason", async () => {
    const r = await s.req("GET", "/");
    expect(r.status).toBe(200);
    const csp = String(r.headers["content-security-policy"]);
    expect(csp).toContain("default-src 'self'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:/);
    expect(r.text()).not.toMatch(/<script>|<style>| style=/);
    // The API keeps its own, stricter policy.
    expect(String((await s.req("GET", "/api/v1/openapi.json")).headers["content-security-policy"])).toContain("default-src 'none'");

    const page = await b.newPage();
    await signIn(page, "not-a-token");
    await text(page, "This token was refused");
    expect(await page.getByRole("alert").innerText()).toContain("invalid_token");
    await signIn(page, tokens.admin.slice(0, -4) + "AAAA");
    await text(page, /This token was refused.*invalid_token/);
    await b.shot(page, "sign-in-refused");
    // The token is in no URL the page went to.
    expect(page.url()).not.toContain("AAAA");
  });

  it("a viewer sees the fleet by version, chip and state, the devices and one device, and no action", async () => {
    const page = await b.newPage();
    await signIn(page, tokens.viewer);
    await text(page, "Versions");
    await eventually(async () => (await stat(page, "devices")) === 26);
    expect(await stat(page, "online")).toBe(24);
    expect(await stat(page, "offline")).toBe(2);
    expect(await stat(page, "failing")).toBe(1);
    const versions = page.getByRole("region", { name: "Versions" });
    expect(await versions.locator(`tr[data-value="${V1}"] td.num`).innerText()).toBe("20");
    expect(await versions.locator('tr[data-value="v5.2.2"] td.num').innerText()).toBe("4");
    const chips = page.getByRole("region", { name: "Chips" });
    expect(await chips.locator('tr[data-value="esp32"] td.num').innerText()).toBe("20");
    expect(await chips.locator('tr[data-value="esp32c3"] td.num').innerText()).toBe("4");
    expect(await page.locator(".who").innerText()).toContain("vera");
    expect(await page.getByRole("link", { name: "Audit log" }).count()).toBe(0);
    await b.shot(page, "fleet");

    // The device list, filtered by state from the overview's link.
    await page.getByRole("region", { name: "Update states" }).getByRole("link", { name: "failed" }).click();
    await eventually(async () => (await page.locator("tr[data-device]").count()) === 1);
    await page.getByRole("link", { name: c3[0] }).click();
    await text(page, "flash write failed at 0x110000");
    await text(page, "write_failed");
    // No release yet and no image for its chip: nothing offered, and why.
    await text(page, "Nothing: no firmware for esp32c3 yet");
    await b.shot(page, "device");
    await page.goto("/#/devices");
    await page.locator("input[name=search]").fill("34:85");
    await page.getByRole("button", { name: "Filter" }).click();
    await eventually(async () => (await page.locator("tr[data-device]").count()) === 4);
    await page.locator("input[name=search]").fill("");
    await page.getByRole("button", { name: "Filter" }).click();
    await eventually(async () => (await page.locator("tr[data-device]").count()) === 26);
    await b.shot(page, "devices");

    // Firmware: the image, the refused file with its reason; no upload form.
    await page.getByRole("link", { name: "Firmware" }).click();
    await text(page, "hello-5.2.2.bin");
    const refused = page.getByRole("table", { name: "refused files" });
    await refused.waitFor();
    expect(await refused.innerText()).toContain("notes.bin");
    expect(await page.getByRole("region", { name: "upload" }).count()).toBe(0);
    expect(await page.locator("input[type=file]").count()).toBe(0);
    await page.getByRole("link", { name: "Releases" }).click();
    await text(page, "No release yet");
    expect(await page.getByRole("button", { name: /Create release|Roll out/ }).count()).toBe(0);

    // The server refuses what the page does not offer.
    const refusedStatus = await page.evaluate(async (token) => {
      const r = await fetch("/api/v1/releases", { method: "POST", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: JSON.stringify({ name: "sneaky", image: "hello-5.2.2.bin" }) });
      return [r.status, ((await r.json()) as { error: { code: string } }).error.code];
    }, tokens.viewer);
    expect(refusedStatus).toEqual([403, "insufficient_role"]);
  });

  it("a releaser uploads an image with its progress bar, releases it, and watches the rollout advance, then pause itself when devices fail", async () => {
    const page = await b.newPage();
    await signIn(page, tokens.releaser);
    await page.getByRole("link", { name: "Firmware" }).click();
    // A slow uplink (CDP network emulation), so that the progress bar moves in steps.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 20, downloadThroughput: -1, uploadThroughput: 256 * 1024 });
    await page.evaluate(`(() => {
      window.__seen = [];
      new MutationObserver(() => {
        const p = document.querySelector('progress[aria-label="upload progress"]');
        if (p && window.__seen[window.__seen.length - 1] !== p.value) window.__seen.push(p.value);
      }).observe(document.body, { subtree: true, childList: true, attributes: true });
    })()`);
    await page.locator("input[type=file]").setInputFiles(HELLO_WORLD_IDF41);
    await page.getByRole("button", { name: "Upload" }).click();
    await text(page, /Uploaded: .*\.bin/);
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    const seen = await page.evaluate<number[]>("window.__seen");
    expect(seen[seen.length - 1]).toBe(100);
    expect(seen.filter((v) => v > 0 && v < 100).length).toBeGreaterThan(0);
    expect(await page.locator(".pct").innerText()).toBe("100 %");
    await b.shot(page, "firmware");
    expect(s.running.ctx.catalog.image(SHA2)).toBeTruthy();

    // A release of it, then its rollout: half the fleet, then all; advances by itself at 90 % success over 3
    // devices; pauses above 20 % failed after 3.
    await page.getByRole("link", { name: "Releases" }).click();
    const form = page.getByRole("region", { name: "new release" });
    await form.locator("input[name=name]").fill("fw-4.1");
    await form.locator("select[name=image]").selectOption(SHA2);
    await form.locator("input[name=notes]").fill("hello world on IDF 4.1");
    await form.getByRole("button", { name: "Create release" }).click();
    await page.locator('tr[data-release="fw-4.1"]').getByRole("button", { name: "Roll out…" }).click();
    const start = page.getByRole("form", { name: "start rollout of fw-4.1" });
    await start.locator("input[name=stages]").fill("50, 100");
    await start.locator("select[name=advance]").selectOption("auto");
    await start.locator("input[name=success_threshold]").fill("90");
    await start.locator("input[name=min_sample]").fill("3");
    await start.locator("input[name=max_failure_rate]").fill("20");
    await start.locator("input[name=failure_min_sample]").fill("3");
    await start.getByRole("button", { name: "Start rollout" }).click();
    await text(page, "Rollout of fw-4.1");
    expect(await page.locator("[data-percent]").innerText()).toBe("50 %");
    expect(await page.getByRole("button", { name: "Pause" }).count()).toBe(1);

    // Every ESP32 polls; those offered the release install it and confirm: the page shows the stage advance.
    const firstStage: string[] = [];
    for (const id of esp32) if ((await offered(s, id, asV1)) === SHA2) firstStage.push(id);
    expect(firstStage.length).toBeGreaterThanOrEqual(3);
    for (const id of firstStage) {
      await report(s, { device_id: id, status: "downloading", sha256: SHA2, bytes: 0, total: 144672 });
      await report(s, { device_id: id, status: "confirmed", version: V2 });
    }
    await page.locator("[data-percent]").filter({ hasText: "100 %" }).waitFor({ timeout: 10_000 });
    await eventually(async () => (await stat(page, "succeeded")) === firstStage.length, 10_000);
    await b.shot(page, "rollout-advancing");

    // The rest are offered it now and fail: past 20 % failed the rollout pauses itself, and the page says why.
    const rest = esp32.filter((id) => !firstStage.includes(id));
    for (const id of rest) {
      expect(await offered(s, id, asV1)).toBe(SHA2);
      await report(s, { device_id: id, status: "downloading", sha256: SHA2, bytes: 4096, total: 144672 });
      await report(s, { device_id: id, status: "failed", reason: "write_failed", error: "flash write failed" });
      if ((await op.ok("GET", "/rollouts/fw-4.1")).rollout.state === "paused") break;
    }
    const reason = page.locator(".pause-reason");
    await reason.waitFor({ timeout: 10_000 });
    expect(await reason.innerText()).toMatch(/^Paused: failure rate [\d.]+% \(\d+ of \d+ finished devices\) passed the 20% threshold$/);
    expect(await page.getByRole("button", { name: "Resume" }).count()).toBe(1);
    expect(await page.getByRole("button", { name: "Pause" }).count()).toBe(0);
    await b.shot(page, "rollout-paused");

    // Resume, then abort with a reason.
    await page.getByRole("button", { name: "Resume" }).click();
    await page.getByRole("button", { name: "Pause" }).waitFor();
    await page.locator("input[name=reason]").fill("bad flash batch");
    page.once("dialog", (d) => void d.accept());
    await page.getByRole("button", { name: "Abort" }).click();
    await text(page, "Aborted: bad flash batch");
    expect((await op.ok("GET", "/rollouts/fw-4.1")).rollout).toMatchObject({ state: "aborted", reason: "bad flash batch" });
    // The list, and the overview with the new versions.
    await page.getByRole("link", { name: "Rollouts" }).click();
    await text(page, "bad flash batch");
    await page.getByRole("link", { name: "Fleet" }).click();
    await eventually(async () => (await page.getByRole("region", { name: "Versions" }).locator(`tr[data-value="${V2}"] td.num`).count()) === 1, 10_000);
    // A device that failed: the page says why the aborted release is not its any more.
    await page.goto(`/#/devices/${encodeURIComponent(esp32.find((id) => !firstStage.includes(id))!)}`);
    const next = page.getByRole("region", { name: "next offer" });
    await next.locator('li[data-release="fw-4.1"]').waitFor({ timeout: 10_000 });
    expect(await next.innerText()).toContain("fw-4.1: its rollout does not offer it to this device now");
  }, 60_000);

  it("a viewer watches the rollout with no action buttons, and the API refuses the action", async () => {
    const page = await b.newPage();
    await signIn(page, tokens.viewer);
    await page.getByRole("link", { name: "Rollouts" }).click();
    await page.getByRole("link", { name: "fw-4.1" }).click();
    await text(page, "Aborted: bad flash batch");
    expect(await page.getByRole("region", { name: "rollout actions" }).count()).toBe(0);
    expect(await page.getByRole("button", { name: /Pause|Resume|Advance|Abort/ }).count()).toBe(0);
    const id = (await op.ok("GET", "/rollouts/fw-4.1")).rollout.id as string;
    const status = await page.evaluate(
      async ([token, ref]) => (await fetch(`/api/v1/rollouts/${ref}/pause`, { method: "POST", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: "{}" })).status,
      [tokens.viewer, id] as const,
    );
    expect(status).toBe(403);
  });

  it("an admin reads the audit log: the releaser's actions, the automatic pause, the viewer's refused attempts", async () => {
    const page = await b.newPage();
    await signIn(page, tokens.admin);
    await page.getByRole("link", { name: "Audit log" }).click();
    const log = page.getByRole("table", { name: "audit log" });
    await log.waitFor();
    await eventually(async () => (await log.locator('tr[data-action="rollout.abort"]').count()) === 1);
    expect(await log.locator('tr[data-action="rollout.pause"]').innerText()).toContain("system");
    expect(await log.locator('tr[data-action="rollout.start"]').innerText()).toContain("rob");
    expect(await log.locator('tr[data-action="denied"]').count()).toBe(2);
    await b.shot(page, "audit");
    await page.locator("input[name=action]").fill("rollout.pause");
    await page.getByRole("button", { name: "Filter" }).click();
    await eventually(async () => (await log.locator("tbody tr").count()) === 1);
  });

  it("a token revoked while its page is open ends the session at the next read, with the server's reason", async () => {
    const { token, jti } = await s.running.ctx.credentials.issueOperatorToken("temp", "viewer");
    const page = await b.newPage();
    await signIn(page, token);
    await text(page, "Versions");
    await op.ok("POST", `/tokens/${jti}/revoke`, { reason: "left the team" });
    await page.locator("input[name=token]").waitFor({ timeout: 10_000 });
    await text(page, /Signed out: .*revoked/);
    expect(await page.evaluate<number>("sessionStorage.length")).toBe(0);
  });
});
