// A "not modified" (304) answer would keep a device on what it runs for as long as it keeps coming: the real
// agent in the DeviceScript VM must take one only with a MAC over its own request. A relay turns the server's
// answers offering a new image into 304s with no MAC, a forged one, and a genuine one recorded from an earlier
// request; the agent refuses each, says so, keeps asking, and updates once the answers are genuine again.
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { deriveImage } from "../../device/host/esp/factory-image";
import { deviceTestEnv, foreignWrites, HELLO, reported, serverView } from "../helpers/device";
import type { RelayedResponse } from "../helpers/relay";
import { eventually } from "../helpers/server";

jest.setTimeout(90_000);

describe("device agent: 304 answers", () => {
  const env = deviceTestEnv();

  it("refuses a 304 with no MAC, a forged MAC or a replayed one, keeps asking, and updates once answers are genuine", async () => {
    // The factory image is newer than the offered hello_world: the agent refuses it, then asks with its ETag
    // and gets genuine 304s, one of which the relay keeps.
    const dev = await env.device({ id: "dev-not-modified", url: env.relay.url, factoryVersion: "v9.0.0" });
    let genuine: RelayedResponse | null = null;
    let forge: ((res: RelayedResponse) => void) | null = null;
    let forged = 0;
    env.relay.tamper = (req, res) => {
      if (!req.path.startsWith("/firmware/manifest")) return;
      if (res.status === 304 && res.headers["x-manifest-hmac"] && !genuine) genuine = { ...res, headers: { ...res.headers } };
      if (res.status === 200 && forge) {
        forge(res);
        res.status = 304;
        res.body = Buffer.alloc(0);
        delete res.headers["content-type"];
        forged++;
      }
    };
    await dev.powerOn();
    expect(await reported(dev, "rejected", 30_000)).toMatchObject({ reason: "downgrade_refused" });
    const old = await eventually(() => genuine, 30_000);

    // A newer image: from now on the server answers every poll with a 200 offering it, which the relay forges.
    const modes: [string, (res: RelayedResponse) => void][] = [
      ["no MAC", (res) => delete res.headers["x-manifest-hmac"]],
      ["a forged MAC", (res) => (res.headers["x-manifest-hmac"] = randomBytes(32).toString("hex"))],
      ["a genuine 304 for an earlier request", (res) => (res.headers = { ...old.headers })],
    ];
    forge = modes[0]![1];
    const image = deriveImage(HELLO, { version: "v9.1.0" });
    const sha = createHash("sha256").update(image).digest("hex");
    fs.writeFileSync(path.join(env.s.dirs.firmware, "newer.bin"), image);
    await eventually(async () => (await env.s.req("GET", "/firmware/manifest", { headers: { "X-API-Key": env.s.creds.deviceApiKey } })).json().sha256 === sha, 10_000);

    for (const [what, mode] of modes) {
      forge = mode;
      const from = dev.events.length;
      const before = forged;
      const refused = await dev
        .waitFor((e) => e.state === "rejected" && e.reported === true, 30_000, from)
        .catch((e: Error) => {
          throw new Error(`a 304 with ${what} was not refused: ${e.message}`);
        });
      expect(forged).toBeGreaterThan(before);
      expect(refused).toMatchObject({ reason: "hmac_mismatch", version: "v9.0.0" });
      expect(refused.error).toMatch(/304 answer is not authenticated/);
    }
    expect(dev.ops.filter((o) => o.op === "begin")).toEqual([]);
    expect(dev.running!.image.app.version).toBe("v9.0.0");
    const refusals = (await serverView(env.s, "dev-not-modified")).reports.filter((r) => r.status === "rejected").map((r) => r.reason);
    expect(refusals.filter((r) => r === "hmac_mismatch").length).toBeGreaterThanOrEqual(3);

    // Genuine answers again: the offer reaches the device, which installs it.
    forge = null;
    await reported(dev, "confirmed", 60_000);
    expect(dev.running!.image.app.version).toBe("v9.1.0");
    expect(foreignWrites(dev.ops, image)).toEqual([]);
    expect((await serverView(env.s, "dev-not-modified")).device).toMatchObject({ state: "confirmed", version: "v9.1.0" });
  });
});
