// The agent's working memory. Its live data (measured with a collection before every allocation) peaks
// under 24 KiB of the VM's 64 KiB heap. The VM's collector never moves objects, so the heap also needs room
// for fragmentation: with everything but 40 KiB taken away, a whole update still completes.
import type { EmulatedDevice } from "../../device/host/device";
import { vmClock } from "../../device/host/vm/loader";
import { HELLO_VERSION, makeDevice, offerHelloWorld, reported, SERVER_ENV, serverView } from "../helpers/device";
import { startTestServer, type TestServer } from "../helpers/server";

jest.setTimeout(90_000);

const LIVE_BUDGET = 24 * 1024;
const HEAP_LEFT = 40 * 1024;

describe("device agent: memory", () => {
  let s: TestServer;
  const devices: EmulatedDevice[] = [];

  beforeAll(async () => {
    vmClock.setSpeed(1); // real time: nothing here waits for a poll period
    s = await startTestServer(SERVER_ENV);
    await offerHelloWorld(s);
  });
  afterEach(async () => {
    await Promise.all(devices.splice(0).map((d) => d.powerOff()));
  });
  afterAll(async () => s.close());

  it("completes an update with everything but 40 KiB of the heap taken away, and never runs out", async () => {
    // How big the heap is: measured on this VM build, not assumed.
    const probe = await makeDevice(s, { id: "mem-probe", url: s.url, trackHeap: true });
    devices.push(probe);
    await probe.powerOn();
    await probe.waitFor((e) => e.state === "boot", 20_000);
    const total = probe.heapUse()!.total;
    expect(total).toBeGreaterThan(60 * 1024);
    await probe.powerOff();

    // The agent allocates `ballast` bytes first and never frees them. If the rest did not fit, the VM would
    // run out of memory (a panic, then a restart) and the update would not finish.
    const ballast = total - HEAP_LEFT;
    const dev = await makeDevice(s, { id: "mem-budget", url: s.url, trackHeap: true, settings: { ballast } });
    devices.push(dev);
    const oom: string[] = [];
    dev.on("dmesg", (l: string) => {
      if (/OOM|PANIC/i.test(l)) oom.push(l);
    });
    await dev.powerOn();
    await reported(dev, "confirmed", 60_000);
    expect(oom).toEqual([]);
    expect(dev.heapUse()!.used).toBeGreaterThan(ballast); // the ballast really is held
    expect((await serverView(s, "mem-budget")).device).toMatchObject({ state: "confirmed", version: HELLO_VERSION });
  });

  it("its live heap (collected before every allocation) peaks under 24 KiB during a whole update", async () => {
    const dev = await makeDevice(s, { id: "mem-live", url: s.url, trackHeap: true, gcStress: true });
    devices.push(dev);
    await dev.powerOn();
    await reported(dev, "confirmed", 80_000);
    await dev.powerOff();
    expect(dev.heapPeak).toBeGreaterThan(8192); // at least one block was held: the measurement sees it
    expect(dev.heapPeak).toBeLessThanOrEqual(LIVE_BUDGET);
  });
});
