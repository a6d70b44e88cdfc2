// The network failing: an unreachable server (backoff, then recovery), a connection lost mid-download, a
// new image that cannot reach the server after its reboot (health check fails: rollback), and the poll
// period the server suggests.
import type { BootEvent, EmulatedDevice } from "../../device/host/device";
import { CLOCK, deviceTestEnv, HELLO_VERSION, reported, serverView, TEST_SETTINGS } from "../helpers/device";
import { eventually } from "../helpers/server";

jest.setTimeout(60_000);

describe("device agent: network failures", () => {
  const env = deviceTestEnv({ relayPerTest: true });

  it("server unreachable: retries with growing backoff, then recovers and updates", async () => {
    env.relay.setDown(true);
    const dev = await env.device({ id: "net-down", url: env.relay.url });
    await dev.powerOn();
    await dev.waitFor((e) => e.state === "offline" && e.failures === 5, 30_000);
    // Waits between attempts (in VM seconds): doubling from `backoff` (2 s), half of each random.
    const t = env.relay.connections.map((at) => ((at - env.relay.connections[0]!) * CLOCK) / 1000);
    const gaps = t.slice(1).map((x, i) => x - t[i]!);
    expect(gaps.length).toBeGreaterThanOrEqual(4);
    for (const [i, g] of gaps.slice(0, 4).entries()) {
      const full = Math.min(TEST_SETTINGS.backoff * 2 ** i, TEST_SETTINGS.backoff_max);
      expect(g).toBeGreaterThanOrEqual(full / 2 - 0.3);
      expect(g).toBeLessThanOrEqual(full + 1.5);
    }
    expect(gaps[3]!).toBeGreaterThan(gaps[0]! * 2);
    const offline = dev.events.filter((e) => e.state === "offline");
    expect(offline.map((e) => e.failures)).toEqual([1, 2, 3, 4, 5]);

    env.relay.setDown(false);
    await reported(dev, "confirmed", 30_000);
    expect(dev.events.some((e) => e.state === "online")).toBe(true);
    expect((await serverView(env.s, "net-down")).device).toMatchObject({ state: "confirmed", version: HELLO_VERSION });
  });

  it("connection lost during the download: bounded retries, then it resumes from the checkpoint", async () => {
    const dev = await env.device({ id: "net-midway", url: env.relay.url });
    let cut = false;
    env.relay.tamper = (req) => {
      // Lose the network when block 6 is asked for, until the agent has given up on the download for now.
      if (!cut && req.range?.startsWith(`bytes=${6 * 8192}-`)) {
        cut = true;
        env.relay.setDown(true);
        const from = dev.events.length;
        void dev.waitFor((e) => e.state === "offline", 30_000, from).finally(() => env.relay.setDown(false));
        return "cut";
      }
    };
    await dev.powerOn();
    await reported(dev, "confirmed", 40_000);
    const ranges = env.relay.blockRequests().map((r) => Number(/bytes=(\d+)-/.exec(r.range!)![1]));
    // blocks 0-5 once each, then block 6 again (and on): nothing before the cut is fetched twice
    expect(ranges.slice(0, 7)).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => i * 8192));
    expect(ranges.filter((o) => o < 6 * 8192)).toHaveLength(6);
    expect(dev.ops.filter((o) => o.op === "begin")).toHaveLength(1);
    expect(dev.events.some((e) => e.state === "offline")).toBe(true);
  });

  it("a new image that cannot reach the server after its reboot fails its health check and rolls back", async () => {
    const dev = await env.device({ id: "net-health", url: env.relay.url });
    const boots: BootEvent[] = [];
    dev.on("boot", (b: BootEvent) => boots.push(b));
    let cut = false;
    dev.on("agent", (e) => {
      if (!cut && e.state === "rebooting") {
        cut = true;
        env.relay.setDown(true); // the new image will find no server
      }
    });
    let otadataAtRollback: ReturnType<EmulatedDevice["otadataStates"]> = [];
    let newImageBooted = false;
    dev.on("boot", (b: BootEvent) => {
      if (b.slot === "app1") newImageBooted = true;
      if (b.slot === "app0" && newImageBooted && otadataAtRollback.length === 0) {
        otadataAtRollback = dev.otadataStates();
        env.relay.setDown(false); // the old image gets its network back
      }
    });
    await dev.powerOn();
    const rb = await reported(dev, "rolled_back", 40_000).catch((e: Error) => {
      // What happened, for whoever reads a failure: the device's events and what reached the relay.
      const t0 = dev.events[0]?.at ?? 0;
      const evs = dev.events.map((x) => `${x.at - t0} b${x.boot} ${x.state}${x.reported === undefined ? "" : ` reported=${JSON.stringify(x.reported)}`}`);
      const reqs = env.relay.requests.map((r) => `${r.at - t0} ${r.method} ${r.path.slice(0, 40)} ${r.status}`);
      const conns = env.relay.connections.map((c) => c - t0);
      const bootsSeen = boots.map((b) => `b${b.boot} ${b.slot} ${b.state}`).join(", ");
      throw new Error(`${e.message}\nevents:\n${evs.join("\n")}\nboots: ${bootsSeen}\nrelay requests:\n${reqs.join("\n")}\nconnections: ${conns.join(" ")}\ncut=${cut}`);
    });
    expect(rb).toMatchObject({ reason: "health_check_failed", version: "v1.0.0", target_version: HELLO_VERSION });
    expect(boots.slice(0, 3).map((b) => [b.slot, b.state])).toEqual([
      ["app0", "undefined"],
      ["app1", "pending_verify"],
      ["app0", "undefined"],
    ]);
    expect(dev.events.filter((e) => e.state === "confirming").every((e) => e.reported === false)).toBe(true);
    expect(dev.events.filter((e) => e.state === "confirming")).toHaveLength(TEST_SETTINGS.health_tries);
    expect(dev.ops.find((o) => o.op === "mark_invalid")).toMatchObject({ status: 0 });
    expect(otadataAtRollback.map((e) => e.state)).toEqual(["undefined", "invalid"]);
    const reports = (await serverView(env.s, "net-health")).reports;
    expect(reports.find((r) => r.status === "rolled_back")).toMatchObject({ reason: "health_check_failed" });
    // The network is back: the next try confirms.
    await reported(dev, "confirmed", 40_000);
    expect(dev.running!.partition.name).toBe("app1");
  });

  it("polls at the interval the server suggests, with jitter, and reads 304s as 'nothing new'", async () => {
    const dev = await env.device({ id: "net-poll", url: env.relay.url, settings: { poll: 300 } });
    await dev.powerOn();
    await reported(dev, "confirmed", 30_000);
    const from = env.relay.requests.length;
    // Four polls: the first after confirming, then three periods of 10 s (each answered by the time it is seen).
    const manifestPolls = () => env.relay.requests.slice(from).filter((r) => r.path.startsWith("/firmware/manifest") && r.status !== undefined);
    const polls = await eventually(() => manifestPolls().length >= 4 && manifestPolls(), (6 * 10 * 1000) / CLOCK + 10_000);
    // The first answer after confirming is the offer itself (now up to date); after that, 304s.
    expect(polls.slice(1).every((p) => p.status === 304)).toBe(true);
    const gaps = polls.slice(1).map((p, i) => ((p.at - polls[i]!.at) * CLOCK) / 1000);
    for (const g of gaps) {
      expect(g).toBeGreaterThanOrEqual(9 - 0.5); // 10 s +- 10 %, the setting's 300 s is not used
      expect(g).toBeLessThanOrEqual(11 + 1.5);
    }
    // No new report for polls that found nothing new.
    expect((await serverView(env.s, "net-poll")).reports.at(-1)).toMatchObject({ status: "confirmed" });
  });
});
