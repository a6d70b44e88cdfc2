// The operator's device list: each filter (tag, group, channel, version, state, online/offline, search), alone
// and together, gives exactly the matching devices in id order, page after page; the fleet summary counts them.
import { Operator, poll, report } from "../helpers/fleet";
import { startTestServer, type TestServer } from "../helpers/server";

const V1 = "v1.4.1-2-g0296947-dirty";
const V2 = "v4.1-dev-1935-g647cb62-dirty";

describe("device list filters", () => {
  let s: TestServer;
  let op: Operator;
  const online = ["dev-01", "dev-02", "dev-03", "dev-04", "dev-05", "dev-06", "lab-01", "lab-02"];
  const offline = ["dev-07", "dev-08", "zz-01"];
  const ids = async (q: string) => {
    const out: string[] = [];
    let after: string | null = null;
    // Two at a time: every filter is read across pages.
    do {
      const page: { devices: { id: string }[]; next: string | null } = await op.ok("GET", `/devices?limit=2&${q}${after ? `&after=${encodeURIComponent(after)}` : ""}`);
      out.push(...page.devices.map((d) => d.id));
      after = page.next;
    } while (after);
    return out;
  };

  beforeAll(async () => {
    s = await startTestServer();
    op = new Operator(s);
    for (const [i, id] of online.entries()) expect((await poll(s, id, { chip: "esp32", version: i % 2 ? V2 : V1 })).status).toBe(404);
    // Registered but never seen: offline.
    for (const id of offline) await op.ok("POST", `/devices/${id}/provision`, {});
    for (const id of ["dev-02", "dev-05", "lab-02", "zz-01"]) await op.ok("PATCH", `/devices/${id}`, { add_tags: ["north"] });
    for (const id of ["dev-03", "lab-01"]) await op.ok("PATCH", `/devices/${id}`, { group: "g1" });
    await op.ok("PATCH", "/devices/dev-04", { channel: "beta" });
    await report(s, { device_id: "dev-06", status: "failed", reason: "write_failed" });
    await report(s, { device_id: "dev-01", status: "downloading", bytes: 0, total: 10 });
  });
  afterAll(async () => s.close());

  it("each filter alone", async () => {
    expect(await ids("tag=north")).toEqual(["dev-02", "dev-05", "lab-02", "zz-01"]);
    expect(await ids("tag=south")).toEqual([]);
    expect(await ids("group=g1")).toEqual(["dev-03", "lab-01"]);
    expect(await ids("channel=beta")).toEqual(["dev-04"]);
    expect(await ids("channel=stable")).toEqual([...online, ...offline].filter((d) => d !== "dev-04").sort());
    expect(await ids(`version=${encodeURIComponent(V2)}`)).toEqual(["dev-02", "dev-04", "dev-06", "lab-02"]);
    expect(await ids("version=v9.9.9")).toEqual([]);
    expect(await ids("state=failed")).toEqual(["dev-06"]);
    expect(await ids("state=downloading")).toEqual(["dev-01"]);
    expect(await ids("online=true")).toEqual(online);
    expect(await ids("online=false")).toEqual(offline);
    expect(await ids("search=lab")).toEqual(["lab-01", "lab-02"]);
    expect(await ids("search=dev-0")).toEqual(["dev-01", "dev-02", "dev-03", "dev-04", "dev-05", "dev-06", "dev-07", "dev-08"]);
    expect(await ids("search=zz-01")).toEqual(["zz-01"]);
    expect(await ids("search=zz-010")).toEqual([]);
  });

  it("filters together", async () => {
    expect(await ids("tag=north&online=true")).toEqual(["dev-02", "dev-05", "lab-02"]);
    expect(await ids("tag=north&online=false")).toEqual(["zz-01"]);
    expect(await ids("tag=north&search=dev")).toEqual(["dev-02", "dev-05"]);
    expect(await ids(`group=g1&version=${encodeURIComponent(V1)}`)).toEqual(["dev-03", "lab-01"]);
    expect(await ids("online=true&search=lab")).toEqual(["lab-01", "lab-02"]);
    expect(await ids("state=failed&online=false")).toEqual([]);
  });

  it("refuses filters that cannot match anything it stores, saying which", async () => {
    for (const [q, field] of [
      ["state=exploded", "state"],
      ["version=" + "x".repeat(33), "version"],
      ["search=a%20b", "search"],
    ] as const) {
      const r = await op.call("GET", `/devices?${q}`);
      expect(r.status).toBe(400);
      expect(r.json().error.code).toBe("invalid_request");
      expect(r.json().error.message).toMatch(new RegExp(`^${field}:`));
    }
  });

  it("the fleet summary counts the same devices: online, offline, failing, by version, chip and state", async () => {
    const f = await op.ok("GET", "/fleet");
    expect(f.devices).toEqual({ total: 11, online: 8, offline: 3, failing: 1, revoked: 0 });
    expect(f.versions).toEqual([
      { value: V1, devices: 4 },
      { value: V2, devices: 4 },
      { value: null, devices: 3 },
    ]);
    expect(f.chips).toEqual([
      { value: "esp32", devices: 8 },
      { value: null, devices: 3 },
    ]);
    expect(f.states).toContainEqual({ value: "failed", devices: 1 });
    expect(f.states).toContainEqual({ value: "downloading", devices: 1 });
    expect(f.states.reduce((n: number, st: { devices: number }) => n + st.devices, 0)).toBe(11);
    await op.ok("POST", "/devices/zz-01/revoke", {});
    expect((await op.ok("GET", "/fleet")).devices).toEqual({ total: 10, online: 8, offline: 2, failing: 1, revoked: 1 });
  });
});
