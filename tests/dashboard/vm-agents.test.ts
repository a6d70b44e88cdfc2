// The dashboard watching a rollout to real device agents: each runs in DeviceScript's VM on an emulated ESP32
// and talks to the real server over HTTPS. A releaser starts the rollout from the page; the rollout page shows
// the first stage's agent update, the stage advance by itself, the others update, and the rollout complete; a
// device page shows the agent's reports, from the offer to the confirmed new version.
import fs from "node:fs";
import path from "node:path";
import type { EmulatedDevice } from "../../device/host/device";
import { buildDashboard, describeWithChromium, openBrowser, type Browsing } from "../helpers/browser";
import { makeDevice, reported, SERVER_ENV, useFastClock } from "../helpers/device";
import { HELLO_WORLD, HELLO_WORLD_IDF41 } from "../helpers/fixtures";
import { bucketOracle, mac, Operator, rolloutIdOracle, writeMasterKey } from "../helpers/fleet";
import { eventually, startTestServer, tempDirs, type TestServer } from "../helpers/server";

jest.setTimeout(90_000);

const V1 = "v1.4.1-2-g0296947-dirty"; // hello_world: the agents' factory image
const V2 = "v4.1-dev-1935-g647cb62-dirty";

describeWithChromium("the dashboard watching a rollout to agents in the VM", () => {
  let s: TestServer;
  let b: Browsing;
  const devices: EmulatedDevice[] = [];
  let first: string;
  let later: string[];

  beforeAll(async () => {
    buildDashboard();
    useFastClock();
    const dirs = tempDirs("ota-dashboard-vm-");
    writeMasterKey(dirs);
    s = await startTestServer(SERVER_ENV, dirs);
    const op = new Operator(s);
    fs.copyFileSync(HELLO_WORLD, path.join(s.dirs.firmware, "app-v1.bin"));
    fs.copyFileSync(HELLO_WORLD_IDF41, path.join(s.dirs.firmware, "app-v2.bin"));
    await eventually(() => s.running.ctx.catalog.imageByName("app-v1.bin") && s.running.ctx.catalog.imageByName("app-v2.bin"), 20_000);
    await op.ok("POST", "/releases", { name: "r1", image: "app-v1.bin" });
    await op.ok("POST", "/releases/r1/rollout", { stages: [100] });
    await op.ok("POST", "/rollouts/r1/advance");
    await op.ok("POST", "/releases", { name: "r2", image: "app-v2.bin", notes: "IDF 4.1 build" });
    // One agent in the 50 % stage, two outside it (the rollout's id, and so the buckets, follow from the key).
    const bucket = bucketOracle(s.dirs.data);
    const id = rolloutIdOracle(s.dirs.data)("r2");
    const ids = Array.from({ length: 100 }, (_, i) => mac(i + 1, "24:0a:c4"));
    first = ids.find((d) => bucket(id, d) < 5000)!;
    later = ids.filter((d) => bucket(id, d) >= 5000).slice(0, 2);
    for (const d of [first, ...later]) devices.push(await makeDevice(s, { id: d, url: s.url, factoryVersion: V1 }));
    await Promise.all(devices.map((d) => d.powerOn()));
    await Promise.all(devices.map((d) => reported(d, "up_to_date", 30_000)));
    b = await openBrowser(s.url, path.join(dirs.root, "screenshots"));
  }, 90_000);

  afterAll(async () => {
    await Promise.all(devices.map((d) => d.powerOff()));
    await b?.close();
    await s?.close();
  });

  it("a releaser starts the rollout and watches the agents update, the stage advance and the rollout complete", async () => {
    const page = await b.newPage();
    const token = (await s.running.ctx.credentials.issueOperatorToken("rob", "releaser")).token;
    await page.goto("/");
    await page.locator("input[name=token]").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("link", { name: "Releases" }).click();
    await page.locator('tr[data-release="r2"]').getByRole("button", { name: "Roll out…" }).click();
    const start = page.getByRole("form", { name: "start rollout of r2" });
    await start.locator("input[name=stages]").fill("50, 100");
    await start.locator("select[name=advance]").selectOption("auto");
    await start.locator("input[name=success_threshold]").fill("100");
    await start.locator("input[name=min_sample]").fill("1");
    await start.getByRole("button", { name: "Start rollout" }).click();
    await page.getByText("Rollout of r2").waitFor();
    expect(await page.locator("[data-percent]").innerText()).toBe("50 %");

    // The first stage's agent downloads, reboots into it and confirms; the stage advances by itself.
    await reported(devices[0]!, "confirmed", 60_000);
    await page.locator("[data-percent]").filter({ hasText: "100 %" }).waitFor({ timeout: 15_000 });
    await b.shot(page, "rollout-agents");
    // The other two follow; the last stage's first success completes the rollout (and ends its counting).
    await Promise.all(devices.slice(1).map((d) => reported(d, "confirmed", 60_000)));
    await page.locator(".badge.state-completed").first().waitFor({ timeout: 15_000 });
    expect(Number(await page.locator('[data-stat="succeeded"] .value').innerText())).toBeGreaterThanOrEqual(2);
    expect(await page.getByRole("button", { name: /Pause|Resume|Advance|Abort/ }).count()).toBe(0);
    // The device list, by version: all three run release 2.
    await page.goto(`/#/devices?version=${encodeURIComponent(V2)}`);
    await eventually(async () => (await page.locator("tr[data-device]").count()) === 3, 10_000);
    expect((await page.locator("tr[data-device]").allInnerTexts()).map((t) => t.split("\t")[0]).sort()).toEqual([first, ...later].sort());

    // The first agent's page: running V2, its reports from download to confirmed.
    await page.goto(`/#/devices/${encodeURIComponent(first)}`);
    const reports = page.getByRole("table", { name: "reports" });
    await reports.waitFor();
    await eventually(async () => (await page.locator("dl.facts").innerText()).includes(V2), 10_000);
    const text = await reports.innerText();
    for (const st of ["downloading", "rebooting", "confirmed"]) expect(text).toContain(st);
    expect(b.foreign).toEqual([]);
    expect(b.problems).toEqual([]);
  });
});
