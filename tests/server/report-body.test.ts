// What a device report says, as the real server stores it: the status words it accepts, every field as kept in
// the device's history, what the device's row takes from a report (state, detail, progress, version, address),
// and the history read back page by page.
import { startTestServer, type TestServer } from "../helpers/server";

describe("report bodies", () => {
  let s: TestServer;
  const op = () => ({ Authorization: `Bearer ${s.creds.operatorToken}` });
  const send = (body: object) =>
    s.req("POST", "/firmware/report", { headers: { "X-API-Key": s.creds.deviceApiKey, "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const device = async (id: string) => (await s.req("GET", `/api/v1/devices/${id}`, { headers: op() })).json();

  beforeAll(async () => (s = await startTestServer()));
  afterAll(async () => s.close());

  it("status words in any case and with spaces around; SUCCESS, FAILED and FAILURE map onto ours", async () => {
    const words: [string, string][] = [
      [" Confirmed ", "confirmed"],
      ["WRITING", "writing"],
      ["success", "confirmed"],
      ["Failure", "failed"],
      ["FAILED", "failed"],
      ["rolled_back", "rolled_back"],
    ];
    for (const [word, state] of words) {
      const r = await send({ device_id: "words", status: word, report_id: `w-${word.trim()}` });
      expect([word, r.status, r.json()]).toEqual([word, 200, { ok: true, duplicate: false }]);
      expect((await device("words")).device.state).toBe(state);
    }
    const bad = await send({ device_id: "words", status: "exploded" });
    expect(bad.status).toBe(400);
    expect(bad.json().error.message).toContain(
      "must be one of idle, checking, up_to_date, downloading, verifying, writing, rebooting, confirming, confirmed, rolled_back, failed, rejected (or SUCCESS, FAILED)",
    );
    expect((await send({ device_id: "words", status: "s".repeat(33) })).status).toBe(400);
  });

  it("every field is kept in the history as sent (the digest in lower case); the row takes state, detail, progress and version", async () => {
    const sha = "AB".repeat(32);
    const first = { device_id: "fields", status: "downloading", version: "v1.0", target_version: "v2.0", bytes: 10, total: 100, report_id: "f-1" };
    expect((await send(first)).status).toBe(200);
    let d = await device("fields");
    expect(d.device).toMatchObject({ state: "downloading", state_detail: null, version: "v1.0", target_version: "v2.0", progress: { bytes: 10, total: 100 } });

    // No version in the report: the device keeps the one it had. The reason is the state's detail.
    expect((await send({ device_id: "fields", status: "failed", reason: "block_hash_mismatch", report_id: "f-2" })).status).toBe(200);
    d = await device("fields");
    expect(d.device).toMatchObject({ state: "failed", state_detail: "block_hash_mismatch", version: "v1.0", target_version: null, progress: null });

    // An error text, when there is one, is the detail rather than the reason.
    const last = { device_id: "fields", status: "failed", error: "flash write failed at 0x10000", reason: "write_error", sha256: sha, report_id: "f-3" };
    expect((await send(last)).status).toBe(200);
    d = await device("fields");
    expect(d.device).toMatchObject({ state_detail: "flash write failed at 0x10000", version: "v1.0" });
    expect(d.reports[0]).toMatchObject({
      status: "failed",
      version: null,
      target_version: null,
      error: "flash write failed at 0x10000",
      reason: "write_error",
      bytes: null,
      total: null,
      sha256: sha.toLowerCase(),
      report_id: "f-3",
    });
    expect(d.reports[2]).toMatchObject({ status: "downloading", version: "v1.0", target_version: "v2.0", error: null, reason: null, bytes: 10, total: 100, sha256: null, report_id: "f-1" });
    expect(d.device.first_seen_at <= d.reports[2].received_at).toBe(true);
    expect(d.device.last_report_at).toBe(d.reports[0].received_at);
  });

  it("a body that is not a JSON object is refused saying where; each report taken is logged with what it said", async () => {
    const post = (body: string, type: string) => s.req("POST", "/firmware/report", { headers: { "X-API-Key": s.creds.deviceApiKey, "Content-Type": type }, body });
    const list = await post("[1,2]", "application/json");
    expect(list.status).toBe(400);
    expect(list.json().error).toMatchObject({ code: "invalid_request", message: expect.stringMatching(/^body: /) });
    const text = await post("status=idle", "text/plain");
    expect(text.status).toBe(415);
    expect(text.json().error).toEqual({ code: "unsupported_media_type", message: "send the report as Content-Type: application/json" });

    expect((await send({ device_id: "logged", status: "FAILED", reason: "write_error", report_id: "l-1" })).status).toBe(200);
    const line = s.logs.map((l) => JSON.parse(l)).find((l) => l.msg === "device report" && l.device === "logged");
    expect(line).toMatchObject({ device: "logged", status: "failed", reason: "write_error", duplicate: false });
  });

  it("a report without an id gets one from its body: another body is another report", async () => {
    const a = await send({ device_id: "auto", status: "checking" });
    const b = await send({ device_id: "auto", status: "checking", version: "v1" });
    const again = await send({ device_id: "auto", status: "checking", version: "v1" });
    expect([a.json(), b.json(), again.json()]).toEqual([
      { ok: true, duplicate: false },
      { ok: true, duplicate: false },
      { ok: true, duplicate: true },
    ]);
    const { reports } = await device("auto");
    expect(reports).toHaveLength(2);
    expect(reports.every((r: { report_id: string }) => /^auto:[0-9a-f]{32}$/.test(r.report_id))).toBe(true);
  });

  it("the history reads back newest first, page by page", async () => {
    for (let i = 0; i < 5; i++) expect((await send({ device_id: "pages", status: "checking", report_id: `p-${i}` })).status).toBe(200);
    const page = async (q: string) => (await s.req("GET", `/api/v1/devices/pages/reports${q}`, { headers: op() })).json();
    const p1 = await page("?limit=2");
    expect(p1.reports.map((r: { report_id: string }) => r.report_id)).toEqual(["p-4", "p-3"]);
    const p2 = await page(`?limit=2&before=${p1.next}`);
    expect(p2.reports.map((r: { report_id: string }) => r.report_id)).toEqual(["p-2", "p-1"]);
    const p3 = await page(`?limit=2&before=${p2.next}`);
    expect(p3).toMatchObject({ reports: [{ report_id: "p-0" }], next: null });
  });
});
