// Poll sightings are written behind; a report that arrives meanwhile is newer and its version must stand.
import { startTestServer, type TestServer } from "../helpers/server";

describe("device registry: sightings and reports in order", () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(async () => s.close());

  it("a version reported after a poll is not overwritten by that poll's pending sighting", async () => {
    const id = "order-1";
    const key = { "X-API-Key": s.creds.deviceApiKey };
    // A poll announcing the old version (its sighting is written within a second)...
    s.running.ctx.devices.seen(id, { version: "v1.0.0", chip: "esp32" });
    // ...then, before that write, a report from the new image.
    const r = await s.req("POST", "/firmware/report", {
      headers: { ...key, "Content-Type": "application/json" },
      body: JSON.stringify({ device_id: id, status: "confirmed", version: "v2.0.0" }),
    });
    expect(r.status).toBe(200);
    const op = { Authorization: `Bearer ${s.creds.operatorToken}` };
    expect((await s.req("GET", `/api/v1/devices/${id}`, { headers: op })).json().device).toMatchObject({ version: "v2.0.0", chip: "esp32" });
    await s.running.ctx.devices.flush();
    expect((await s.req("GET", `/api/v1/devices/${id}`, { headers: op })).json().device).toMatchObject({ version: "v2.0.0", state: "confirmed" });
    // A later poll still updates it.
    s.running.ctx.devices.seen(id, { version: "v2.0.1" });
    await s.running.ctx.devices.flush();
    expect((await s.req("GET", `/api/v1/devices/${id}`, { headers: op })).json().device).toMatchObject({ version: "v2.0.1" });
  });
});
