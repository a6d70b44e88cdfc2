// The device list, with the API's filters (search by id prefix, version, state, online, tag, group, channel), a
// page at a time; and one device: its current state and its report history.
import { useState } from "preact/hooks";
import type { Device, DeviceOffer, Report } from "../api/types";
import { usePoll } from "../components/poll";
import { useSession } from "../components/session";
import { Ago, Badge, Bytes, ErrorNote, Loading, Page } from "../components/ui";

const FILTERS = ["search", "version", "state", "online", "tag", "group", "channel"] as const;
type Filters = Partial<Record<(typeof FILTERS)[number], string>>;
const STATES = ["idle", "checking", "up_to_date", "downloading", "verifying", "writing", "rebooting", "confirming", "confirmed", "rolled_back", "failed", "rejected"];

const deviceHref = (id: string) => `#/devices/${encodeURIComponent(id)}`;

function FilterForm({ value, onApply }: { value: Filters; onApply: (f: Filters) => void }) {
  const [f, setF] = useState<Filters>(value);
  const field = (k: keyof Filters) => ({
    name: k,
    value: f[k] ?? "",
    onInput: (e: Event) => setF({ ...f, [k]: (e.currentTarget as HTMLInputElement).value }),
  });
  return (
    <form
      class="filters"
      onSubmit={(e) => {
        e.preventDefault();
        onApply(Object.fromEntries(Object.entries(f).filter(([, v]) => v)));
      }}
    >
      <label>
        Id starts with <input {...field("search")} placeholder="aa:bb:cc" />
      </label>
      <label>
        Version <input {...field("version")} />
      </label>
      <label>
        State
        <select {...field("state")} onChange={field("state").onInput}>
          <option value="">any</option>
          {STATES.map((s) => (
            <option key={s}>{s}</option>
          ))}
        </select>
      </label>
      <label>
        Seen
        <select {...field("online")} onChange={field("online").onInput}>
          <option value="">any</option>
          <option value="true">online</option>
          <option value="false">offline</option>
        </select>
      </label>
      <label>
        Tag <input {...field("tag")} />
      </label>
      <label>
        Group <input {...field("group")} />
      </label>
      <label>
        Channel <input {...field("channel")} />
      </label>
      <button type="submit">Filter</button>
    </form>
  );
}

export function Devices({ query }: { query: URLSearchParams }) {
  const { api } = useSession();
  const filters: Filters = Object.fromEntries(FILTERS.flatMap((k) => (query.get(k) ? [[k, query.get(k)!]] : [])));
  const [after, setAfter] = useState<string[]>([]);
  const qs = new URLSearchParams({ ...filters, limit: "50" });
  if (after.length) qs.set("after", after[after.length - 1]!);
  const list = usePoll(() => api.get<{ devices: Device[]; next: string | null }>(`/devices?${qs.toString()}`), qs.toString(), 10000);
  const apply = (f: Filters) => {
    setAfter([]);
    location.hash = `#/devices?${new URLSearchParams(f).toString()}`;
  };
  return (
    <Page title="Devices">
      <FilterForm key={JSON.stringify(filters)} value={filters} onApply={apply} />
      <ErrorNote error={list.error} />
      {!list.data ? (
        <Loading what="devices" />
      ) : (
        <>
          <table class="list" aria-label="devices">
            <thead>
              <tr>
                <th>Device</th>
                <th>Version</th>
                <th>Chip</th>
                <th>State</th>
                <th>Seen</th>
                <th>Channel / group / tags</th>
              </tr>
            </thead>
            <tbody>
              {list.data.devices.map((d) => (
                <tr key={d.id} data-device={d.id}>
                  <td>
                    <a href={deviceHref(d.id)}>{d.id}</a>
                    {d.revoked ? <Badge value="revoked" kind="bad" /> : null}
                  </td>
                  <td>{d.version ?? <span class="muted">unknown</span>}</td>
                  <td>{d.chip ?? <span class="muted">unknown</span>}</td>
                  <td>
                    {d.state ? <Badge value={d.state} /> : <span class="muted">no report</span>}
                    {d.progress ? <progress max={d.progress.total} value={d.progress.bytes ?? 0} /> : null}
                  </td>
                  <td>
                    <span class={d.online ? "dot online" : "dot offline"} title={d.online ? "online" : "offline"} /> <Ago at={d.last_seen_at} />
                  </td>
                  <td>
                    {d.channel} {d.group ? `/ ${d.group}` : ""} {d.tags.join(", ")}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {list.data.devices.length === 0 ? <p class="muted">No device matches.</p> : null}
          <div class="pager">
            <button type="button" disabled={after.length === 0} onClick={() => setAfter(after.slice(0, -1))}>
              Previous
            </button>
            <button type="button" disabled={!list.data.next} onClick={() => list.data?.next && setAfter([...after, list.data.next])}>
              Next
            </button>
          </div>
        </>
      )}
    </Page>
  );
}

const REFUSALS: Record<string, string> = {
  not_targeted: "not targeted at it (group, tag or device list)",
  hardware: "built for other hardware (chip or revision)",
  not_in_rollout: "its rollout does not offer it to this device now",
  no_upgrade_path: "no upgrade path from the version it runs",
  downgrade: "older than what it runs, and the release does not allow downgrades",
};

function Offer({ id }: { id: string }) {
  const { api } = useSession();
  const why = usePoll(() => api.get<DeviceOffer>(`/devices/${encodeURIComponent(id)}/offer`), id, 10000);
  const o = why.data;
  return (
    <section class="card" aria-label="next offer">
      <h3>Next offer</h3>
      <ErrorNote error={why.error} />
      {!o ? null : (
        <>
          <p>
            {o.offer ? (
              <>
                Offered <strong>{o.offer.release ?? o.offer.version}</strong> ({o.offer.version}, <code>{o.offer.sha256.slice(0, 12)}…</code>)
                {o.mode === "latest" ? ": no release exists yet, so the newest image for its chip" : ""}
                {o.pinned ? ": pinned" : ""}
              </>
            ) : (
              <>Nothing: {o.message}</>
            )}
          </p>
          {o.candidates.length ? (
            <ul class="plain" aria-label="releases judged">
              {o.candidates.map((c) => (
                <li key={c.release} data-release={c.release}>
                  <strong>{c.release}</strong>:{" "}
                  {c.refusal === null ? (c.installs !== c.release ? `its (first ${c.installs ?? ""}, on the upgrade path)` : "its") : (REFUSALS[c.refusal] ?? c.refusal)}
                </li>
              ))}
            </ul>
          ) : null}
        </>
      )}
    </section>
  );
}

export function DevicePage({ id }: { id: string }) {
  const { api } = useSession();
  const one = usePoll(() => api.get<{ device: Device; reports: Report[] }>(`/devices/${encodeURIComponent(id)}`), id, 5000);
  const d = one.data?.device;
  return (
    <Page title={`Device ${id}`}>
      <ErrorNote error={one.error} />
      {!d ? (
        <Loading what="the device" />
      ) : (
        <>
          <dl class="facts">
            <dt>State</dt>
            <dd>
              {d.state ? <Badge value={d.state} /> : <span class="muted">no report</span>} {d.state_detail}
              {d.progress ? (
                <>
                  {" "}
                  <progress max={d.progress.total} value={d.progress.bytes ?? 0} /> <Bytes n={d.progress.bytes} /> of <Bytes n={d.progress.total} />
                </>
              ) : null}
            </dd>
            <dt>Version</dt>
            <dd>
              {d.version ?? "unknown"}
              {d.target_version ? ` → ${d.target_version}` : ""}
            </dd>
            <dt>Chip</dt>
            <dd>
              {d.chip ?? "unknown"}
              {d.chip_rev != null ? ` rev ${Math.floor(d.chip_rev / 100)}.${d.chip_rev % 100}` : ""}
            </dd>
            <dt>Online</dt>
            <dd>
              {d.online ? "yes" : "no"}, last seen <Ago at={d.last_seen_at} />, last report <Ago at={d.last_report_at} />
            </dd>
            <dt>Channel</dt>
            <dd>{d.channel}</dd>
            <dt>Group</dt>
            <dd>{d.group ?? "–"}</dd>
            <dt>Tags</dt>
            <dd>{d.tags.length ? d.tags.join(", ") : "–"}</dd>
            <dt>Pinned release</dt>
            <dd>{d.pinned_release ?? "– (follows its channel)"}</dd>
            <dt>Credentials</dt>
            <dd>{d.revoked ? `revoked ${d.revoked_at ?? ""}` : d.provisioned ? "its own key" : "fleet key"}</dd>
            <dt>First seen</dt>
            <dd>
              <Ago at={d.first_seen_at} />
            </dd>
          </dl>
          <Offer id={id} />
          <h3>Reports</h3>
          <table class="list" aria-label="reports">
            <thead>
              <tr>
                <th>Received</th>
                <th>Status</th>
                <th>Version</th>
                <th>Target</th>
                <th>Progress</th>
                <th>Reason / error</th>
              </tr>
            </thead>
            <tbody>
              {one.data!.reports.map((r) => (
                <tr key={r.id}>
                  <td>
                    <Ago at={r.received_at} />
                  </td>
                  <td>
                    <Badge value={r.status} />
                  </td>
                  <td>{r.version ?? "–"}</td>
                  <td>{r.target_version ?? "–"}</td>
                  <td>{r.total ? <progress max={r.total} value={r.bytes ?? 0} /> : "–"}</td>
                  <td>
                    {r.reason ? <code>{r.reason}</code> : null} {r.error ?? ""}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {one.data!.reports.length === 0 ? <p class="muted">No report yet.</p> : null}
        </>
      )}
    </Page>
  );
}
