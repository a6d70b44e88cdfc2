// The fleet at a glance: how many devices, online, failing; devices by version, chip and state; open rollouts.
import type { FirmwareFile, Fleet, Rollout } from "../api/types";
import { usePoll } from "../components/poll";
import { useSession } from "../components/session";
import { Badge, CountBars, ErrorNote, Loading, Page, Stat } from "../components/ui";

const q = (k: string, v: string) => `#/devices?${k}=${encodeURIComponent(v)}`;

export function Overview() {
  const { api } = useSession();
  const fleet = usePoll(() => api.get<Fleet>("/fleet"), "fleet", 5000);
  const rollouts = usePoll(() => api.get<{ rollouts: Rollout[] }>("/rollouts"), "rollouts", 5000);
  const rejected = usePoll(() => api.get<{ files: FirmwareFile[] }>("/firmware/rejected"), "rejected", 15000);
  const f = fleet.data;
  const open = (rollouts.data?.rollouts ?? []).filter((r) => r.state === "running" || r.state === "paused");
  return (
    <Page title="Fleet">
      <ErrorNote error={fleet.error} />
      {!f ? (
        <Loading what="the fleet" />
      ) : (
        <>
          <div class="stats">
            <Stat label="devices" value={f.devices.total} />
            <Stat label="online" value={f.devices.online} kind="ok" />
            <Stat label="offline" value={f.devices.offline} kind={f.devices.offline ? "warn" : ""} />
            <Stat label="failing" value={f.devices.failing} kind={f.devices.failing ? "bad" : ""} />
            {f.devices.revoked ? <Stat label="revoked" value={f.devices.revoked} /> : null}
          </div>
          <div class="grid">
            <CountBars title="Versions" rows={f.versions} total={f.devices.total} href={(v) => q("version", v)} />
            <CountBars title="Chips" rows={f.chips} total={f.devices.total} />
            <CountBars title="Update states" rows={f.states} total={f.devices.total} href={(v) => q("state", v)} none="no report yet" />
          </div>
        </>
      )}
      <section class="card">
        <h3>Open rollouts</h3>
        {open.length === 0 ? <p class="muted">No rollout is running or paused.</p> : null}
        <ul class="plain">
          {open.map((r) => (
            <li key={r.id}>
              <a href={`#/rollouts/${encodeURIComponent(r.id)}`}>{r.release}</a> <Badge value={r.state} /> stage {r.stage.index + 1} of {r.policy.stages.length} ({r.stage.percent} %)
              {r.state === "paused" && r.reason ? <span class="reason"> — {r.reason}</span> : null}
            </li>
          ))}
        </ul>
      </section>
      {rejected.data && rejected.data.files.length > 0 ? (
        <p class="warn-note">
          {rejected.data.files.length} firmware file{rejected.data.files.length === 1 ? " was" : "s were"} refused or incomplete: see <a href="#/firmware">Firmware</a>.
        </p>
      ) : null}
    </Page>
  );
}
