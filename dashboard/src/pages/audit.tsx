// The audit log (admins): who did what, when and from where, newest first, filtered by action or actor.
import { useState } from "preact/hooks";
import type { AuditEntry } from "../api/types";
import { usePoll } from "../components/poll";
import { useSession } from "../components/session";
import { Ago, ErrorNote, Loading, Page } from "../components/ui";

export function Audit() {
  const { api } = useSession();
  const [filter, setFilter] = useState({ action: "", actor: "" });
  const [form, setForm] = useState(filter);
  const qs = new URLSearchParams({ limit: "200", ...Object.fromEntries(Object.entries(filter).filter(([, v]) => v)) }).toString();
  const log = usePoll(() => api.get<{ entries: AuditEntry[] }>(`/audit?${qs}`), qs, 10000);
  return (
    <Page title="Audit log">
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setFilter(form);
        }}
      >
        <label>
          Action <input name="action" value={form.action} placeholder="rollout.pause" onInput={(e) => setForm({ ...form, action: e.currentTarget.value })} />
        </label>
        <label>
          Actor <input name="actor" value={form.actor} onInput={(e) => setForm({ ...form, actor: e.currentTarget.value })} />
        </label>
        <button type="submit">Filter</button>
      </form>
      <ErrorNote error={log.error} />
      {!log.data ? (
        <Loading what="the audit log" />
      ) : (
        <table class="list" aria-label="audit log">
          <thead>
            <tr>
              <th>When</th>
              <th>Who</th>
              <th>Action</th>
              <th>Target</th>
              <th>Outcome</th>
              <th>From</th>
              <th>Details</th>
            </tr>
          </thead>
          <tbody>
            {log.data.entries.map((e) => (
              <tr key={e.id} data-action={e.action}>
                <td>
                  <Ago at={e.at} />
                </td>
                <td>
                  {e.actor}
                  {e.role ? <span class="muted"> ({e.role})</span> : null}
                </td>
                <td>
                  <code>{e.action}</code>
                </td>
                <td>{e.target ?? ""}</td>
                <td class={e.outcome === "denied" ? "bad-text" : ""}>{e.outcome}</td>
                <td>{e.ip ?? e.source}</td>
                <td class="details">
                  <code class="small">{Object.keys(e.details).length ? JSON.stringify(e.details) : ""}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Page>
  );
}
