// Rollouts: the list, and one rollout live (read again every few seconds): its stage, device counts overall and
// per stage, the failure window, why it paused, and for releasers the actions its state allows.
import { useState } from "preact/hooks";
import type { ApiError } from "../api/client";
import { ACTIONS_FROM, type Rollout, type RolloutAction, type RolloutStatus } from "../api/types";
import { usePoll } from "../components/poll";
import { useMay, useSession } from "../components/session";
import { Ago, Badge, ErrorNote, Loading, Page, Stat } from "../components/ui";

/** How often a rollout's page reads it again. */
const LIVE_MS = 2000;

const href = (id: string) => `#/rollouts/${encodeURIComponent(id)}`;

export function Rollouts() {
  const { api } = useSession();
  const list = usePoll(() => api.get<{ rollouts: Rollout[] }>("/rollouts"), "rollouts", 5000);
  return (
    <Page title="Rollouts">
      <ErrorNote error={list.error} />
      {!list.data ? (
        <Loading what="rollouts" />
      ) : (
        <table class="list" aria-label="rollouts">
          <thead>
            <tr>
              <th>Release</th>
              <th>State</th>
              <th>Stage</th>
              <th>Reason</th>
              <th>Started</th>
            </tr>
          </thead>
          <tbody>
            {list.data.rollouts.map((r) => (
              <tr key={r.id} data-rollout={r.id}>
                <td>
                  <a href={href(r.id)}>{r.release}</a>
                </td>
                <td>
                  <Badge value={r.state} />
                </td>
                <td>
                  {r.stage.index + 1} of {r.policy.stages.length} ({r.stage.percent} %)
                </td>
                <td>{r.reason ?? ""}</td>
                <td>
                  <Ago at={r.created_at} /> by {r.created_by}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {list.data?.rollouts.length === 0 ? <p class="muted">No rollout yet: start one from a release.</p> : null}
    </Page>
  );
}

const LABELS: Record<RolloutAction, string> = { pause: "Pause", resume: "Resume", advance: "Advance", abort: "Abort" };

function Actions({ status, onDone }: { status: RolloutStatus; onDone: () => void }) {
  const { api } = useSession();
  const [reason, setReason] = useState("");
  const [error, setError] = useState<ApiError>();
  const [busy, setBusy] = useState(false);
  const r = status.rollout;
  const allowed = (Object.keys(ACTIONS_FROM) as RolloutAction[]).filter((a) => ACTIONS_FROM[a].includes(r.state));
  if (allowed.length === 0) return null;
  const act = async (a: RolloutAction) => {
    if (a === "abort" && !confirm(`Abort the rollout of ${r.release} for good?`)) return;
    setBusy(true);
    try {
      await api.post(`/rollouts/${encodeURIComponent(r.id)}/${a}`, (a === "pause" || a === "abort") && reason ? { reason } : {});
      setError(undefined);
      setReason("");
      onDone();
    } catch (e) {
      setError(e as ApiError);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="card actions" aria-label="rollout actions">
      <div class="inline">
        {allowed.includes("pause") || allowed.includes("abort") ? (
          <input name="reason" placeholder="reason (for pause and abort)" value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
        ) : null}
        {allowed.map((a) => (
          <button key={a} type="button" class={a === "abort" ? "danger" : ""} disabled={busy} onClick={() => void act(a)}>
            {a === "advance" && r.stage.index === r.policy.stages.length - 1 ? "Complete" : LABELS[a]}
          </button>
        ))}
      </div>
      <ErrorNote error={error} />
    </section>
  );
}

export function RolloutPage({ id }: { id: string }) {
  const { api } = useSession();
  const canAct = useMay("releaser");
  const live = usePoll(() => api.get<RolloutStatus>(`/rollouts/${encodeURIComponent(id)}`), id, LIVE_MS);
  const s = live.data;
  if (!s) {
    return (
      <Page title="Rollout">
        <ErrorNote error={live.error} />
        <Loading what="the rollout" />
      </Page>
    );
  }
  const r = s.rollout;
  const d = s.devices;
  const done = d.succeeded + d.failed + d.rolled_back;
  return (
    <Page title={`Rollout of ${r.release}`}>
      <ErrorNote error={live.error} />
      <p class="rollout-head">
        <Badge value={r.state} /> stage <strong data-stage>{r.stage.index + 1}</strong> of {r.policy.stages.length}: <strong data-percent>{r.stage.percent} %</strong> of the targeted devices ·
        advances {r.policy.advance === "auto" ? `by itself at ${r.policy.success_threshold} % success over ${r.policy.min_sample} devices` : "when a releaser says so"} · pauses above{" "}
        {r.policy.max_failure_rate} % failed or {r.policy.max_rollback_rate} % rolled back (after {r.policy.failure_min_sample} devices)
      </p>
      {r.reason ? (
        <p class={r.state === "paused" || r.state === "aborted" ? "pause-reason" : "muted"} role="status">
          {r.state === "paused" ? "Paused: " : r.state === "aborted" ? "Aborted: " : ""}
          {r.reason}
        </p>
      ) : null}
      {canAct ? <Actions status={s} onDone={live.reload} /> : null}
      <div class="stats">
        <Stat label="offered" value={d.total} />
        <Stat label="installing" value={d.offered + d.installing + d.rebooted} />
        <Stat label="succeeded" value={d.succeeded} kind="ok" />
        <Stat label="failed" value={d.failed} kind={d.failed ? "bad" : ""} />
        <Stat label="rolled back" value={d.rolled_back} kind={d.rolled_back ? "bad" : ""} />
      </div>
      <p>
        <progress aria-label="devices finished" max={Math.max(d.total, 1)} value={done} /> {done} of {d.total} offered devices finished
      </p>
      <table class="list" aria-label="stages">
        <thead>
          <tr>
            <th>Stage</th>
            <th>Offered</th>
            <th>Installing</th>
            <th>Succeeded</th>
            <th>Failed</th>
            <th>Rolled back</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {s.stages.map((st, i) => {
            const n = st.offered + st.installing + st.rebooted + st.succeeded + st.failed + st.rolled_back;
            return (
              <tr key={i} class={i === r.stage.index ? "current" : ""}>
                <td>
                  {i + 1}: {st.percent} %
                </td>
                <td>{n}</td>
                <td>{st.offered + st.installing + st.rebooted}</td>
                <td>{st.succeeded}</td>
                <td>{st.failed}</td>
                <td>{st.rolled_back}</td>
                <td>
                  <progress max={Math.max(n, 1)} value={st.succeeded} />
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {s.window ? (
        <p class="muted">
          Since <Ago at={s.window.since} />: {s.window.finished} finished, {s.window.failed} failed, {s.window.rolledBack} rolled back (the rates that pause it).
        </p>
      ) : null}
      <p class="muted small">
        Started <Ago at={r.created_at} /> by {r.created_by}; last change <Ago at={r.updated_at} />. Read every {LIVE_MS / 1000} s.
      </p>
    </Page>
  );
}
