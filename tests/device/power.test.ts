// Power cuts at each stage of an update: every one ends on a valid, bootable image, confirmed, and a
// download resumes from its checkpoint instead of starting over.
import { otaSlots } from "../../device/host/esp/bootloader";
import type { BootEvent, EmulatedDevice } from "../../device/host/device";
import type { WriterOp } from "../../device/host/writer-service";
import { deviceTestEnv, foreignWrites, HELLO, HELLO_VERSION, reported, serverView } from "../helpers/device";

jest.setTimeout(60_000);

const BLOCK = 8192;

describe("device agent: power cuts during an update", () => {
  const env = deviceTestEnv();

  /** Starts a device that loses power once, when `when` says so. Resolves with the writer-op index of the cut. */
  async function cutOnce(id: string, when: (op: WriterOp) => boolean) {
    const dev = await env.device({ id, url: env.relay.url });
    const boots: BootEvent[] = [];
    dev.on("boot", (b: BootEvent) => boots.push(b));
    let cutAt = -1;
    let requestsAtCut = -1;
    dev.on("writer", (op: WriterOp) => {
      if (cutAt < 0 && when(op)) {
        cutAt = dev.ops.length;
        requestsAtCut = env.relay.requests.length;
        void dev.powerCycle();
      }
    });
    await dev.powerOn();
    await reported(dev, "confirmed", 60_000);
    expect(cutAt).toBeGreaterThan(0);
    return { dev, boots, after: dev.ops.slice(cutAt), requestsAfter: env.relay.requests.slice(requestsAtCut) };
  }

  /** The device ends running the new image from ota_1, valid, every byte as served, and the server agrees. */
  async function endsConfirmed(dev: EmulatedDevice, id: string) {
    expect(dev.running).toMatchObject({ partition: { name: "app1" }, image: { app: { version: HELLO_VERSION } } });
    expect(dev.otadataStates().find((e) => e.seq === Math.max(...dev.otadataStates().filter((x) => x.valid).map((x) => x.seq)))!.state).toBe("valid");
    expect(dev.flash.read(otaSlots(dev.o.partitions)[1]!.offset, HELLO.length).equals(HELLO)).toBe(true);
    expect(foreignWrites(dev.ops, HELLO)).toEqual([]);
    expect((await serverView(env.s, id)).device).toMatchObject({ state: "confirmed", version: HELLO_VERSION });
  }

  it("during the download: resumes from the last checkpointed block, not from zero", async () => {
    const { dev, after, requestsAfter } = await cutOnce("cut-download", (op) => op.op === "write" && op.offset! >= 5 * BLOCK);
    const resume = after.find((o) => o.op === "resume")!;
    expect(resume).toMatchObject({ status: 0, size: HELLO.length });
    expect(resume.offset).toBeGreaterThanOrEqual(4 * BLOCK);
    expect(after.some((o) => o.op === "begin")).toBe(false);
    const ranges = requestsAfter.filter((r) => r.range).map((r) => Number(/bytes=(\d+)-/.exec(r.range!)![1]));
    expect(Math.min(...ranges)).toBe(resume.offset); // nothing before the checkpoint is fetched again
    await endsConfirmed(dev, "cut-download");
  });

  it("after end: the finished image is checked again and made bootable, nothing downloaded again", async () => {
    const { dev, after, requestsAfter } = await cutOnce("cut-end", (op) => op.op === "end" && op.status === 0);
    expect(after.map((o) => o.op)).toEqual(["resume", "end", "set_boot", "mark_valid"]);
    expect(after[0]).toMatchObject({ offset: HELLO.length });
    expect(requestsAfter.filter((r) => r.range)).toEqual([]);
    await endsConfirmed(dev, "cut-end");
  });

  it("after set_boot: the new image boots pending verification and confirms itself", async () => {
    const { dev, boots, after } = await cutOnce("cut-setboot", (op) => op.op === "set_boot" && op.status === 0);
    expect(boots.map((b) => [b.slot, b.state])).toEqual([
      ["app0", "undefined"],
      ["app1", "pending_verify"],
    ]);
    expect(after.map((o) => o.op)).toEqual(["mark_valid"]);
    await endsConfirmed(dev, "cut-setboot");
  });

  it("before confirmation: the bootloader rolls back, the agent reports it, and installs again", async () => {
    const dev = await env.device({ id: "cut-confirm", url: env.relay.url });
    const boots: BootEvent[] = [];
    dev.on("boot", (b: BootEvent) => boots.push(b));
    let cut = false;
    dev.on("agent", (e) => {
      // "confirming" is stored on the server, mark_valid not yet sent: cut now.
      if (!cut && e.state === "confirming" && e.reported) {
        cut = true;
        void dev.powerCycle();
      }
    });
    await dev.powerOn();
    const rb = await reported(dev, "rolled_back", 60_000);
    expect(rb).toMatchObject({ reason: "not_confirmed", version: "v1.0.0", target_version: HELLO_VERSION });
    expect(boots.slice(0, 3).map((b) => [b.slot, b.state])).toEqual([
      ["app0", "undefined"],
      ["app1", "pending_verify"],
      ["app0", "undefined"], // aborted at reset: the previous image runs again
    ]);
    expect(dev.ops.filter((o) => o.op === "mark_valid")).toEqual([]);
    await reported(dev, "confirmed", 60_000);
    expect(dev.ops.filter((o) => o.op === "begin")).toHaveLength(2);
    await endsConfirmed(dev, "cut-confirm");
    const statuses = (await serverView(env.s, "cut-confirm")).reports.map((r) => r.status);
    expect(statuses.indexOf("rolled_back")).toBeGreaterThan(statuses.indexOf("confirming"));
    expect(statuses.at(-1)).toBe("confirmed");
  });
});
