// Releases: the list, and for releasers a form that promotes an image to a release and one that starts a
// release's staged rollout.
import { useState } from "preact/hooks";
import type { ApiError } from "../api/client";
import type { Image, NewRelease, Release, Rollout, RolloutPolicy } from "../api/types";
import { usePoll } from "../components/poll";
import { useMay, useSession } from "../components/session";
import { Ago, Badge, ErrorNote, Loading, Page } from "../components/ui";

const value = (e: Event) => (e.currentTarget as HTMLInputElement).value;
const list = (s: string) =>
  s
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean);

function CreateRelease({ images, onDone }: { images: Image[]; onDone: () => void }) {
  const { api } = useSession();
  const [f, setF] = useState({ name: "", image: "", channel: "stable", notes: "", groups: "", tags: "", min_version: "", allow_downgrade: false });
  const [error, setError] = useState<ApiError>();
  const [busy, setBusy] = useState(false);
  const set = (k: keyof typeof f) => (e: Event) => setF({ ...f, [k]: value(e) });
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    try {
      const body: NewRelease = {
        name: f.name,
        image: f.image || (images[0]?.sha256 ?? ""),
        channel: f.channel,
        notes: f.notes,
        targets: { groups: list(f.groups), tags: list(f.tags), devices: [] },
        ...(f.min_version ? { min_version: f.min_version } : {}),
        allow_downgrade: f.allow_downgrade,
      };
      await api.post("/releases", body);
      setError(undefined);
      setF({ ...f, name: "", notes: "" });
      onDone();
    } catch (err) {
      setError(err as ApiError);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="card" aria-label="new release">
      <h3>New release</h3>
      <form class="grid-form" onSubmit={(e) => void submit(e)}>
        <label>
          Name <input name="name" required value={f.name} onInput={set("name")} placeholder="fw-1.2.0" />
        </label>
        <label>
          Image
          <select name="image" value={f.image} onChange={set("image")}>
            {images.map((i) => (
              <option key={i.sha256} value={i.sha256}>
                {i.version} · {i.chip} · {i.files[0] ?? i.sha256.slice(0, 12)}
              </option>
            ))}
          </select>
        </label>
        <label>
          Channel <input name="channel" value={f.channel} onInput={set("channel")} />
        </label>
        <label>
          Groups <input name="groups" value={f.groups} onInput={set("groups")} placeholder="all" />
        </label>
        <label>
          Tags <input name="tags" value={f.tags} onInput={set("tags")} placeholder="all" />
        </label>
        <label>
          Minimum version <input name="min_version" value={f.min_version} onInput={set("min_version")} />
        </label>
        <label class="wide">
          Notes <input name="notes" value={f.notes} onInput={set("notes")} />
        </label>
        <label class="check">
          <input type="checkbox" name="allow_downgrade" checked={f.allow_downgrade} onChange={(e) => setF({ ...f, allow_downgrade: e.currentTarget.checked })} /> May
          downgrade
        </label>
        <button type="submit" disabled={busy || images.length === 0}>
          Create release
        </button>
      </form>
      <ErrorNote error={error} />
    </section>
  );
}

function StartRollout({ release, onDone }: { release: string; onDone: () => void }) {
  const { api } = useSession();
  const [f, setF] = useState({ stages: "10, 50, 100", advance: "manual", success_threshold: "95", min_sample: "10", max_failure_rate: "10", failure_min_sample: "5" });
  const [error, setError] = useState<ApiError>();
  const set = (k: keyof typeof f) => (e: Event) => setF({ ...f, [k]: value(e) });
  const submit = async (e: Event) => {
    e.preventDefault();
    try {
      const policy: RolloutPolicy = {
        stages: list(f.stages).map(Number),
        advance: f.advance === "auto" ? "auto" : "manual",
        success_threshold: Number(f.success_threshold),
        min_sample: Number(f.min_sample),
        max_failure_rate: Number(f.max_failure_rate),
        failure_min_sample: Number(f.failure_min_sample),
      };
      const r = await api.post<{ rollout: Rollout }>(`/releases/${encodeURIComponent(release)}/rollout`, policy);
      onDone();
      location.hash = `#/rollouts/${encodeURIComponent(r.rollout.id)}`;
    } catch (err) {
      setError(err as ApiError);
    }
  };
  const num = (k: keyof typeof f, label: string) => (
    <label>
      {label} <input name={k} inputMode="numeric" value={f[k]} onInput={set(k)} />
    </label>
  );
  return (
    <form class="grid-form rollout-form" aria-label={`start rollout of ${release}`} onSubmit={(e) => void submit(e)}>
      <label>
        Stages (%) <input name="stages" value={f.stages} onInput={set("stages")} />
      </label>
      <label>
        Advance
        <select name="advance" value={f.advance} onChange={set("advance")}>
          <option value="manual">manually</option>
          <option value="auto">automatically</option>
        </select>
      </label>
      {num("success_threshold", "Success needed (%)")}
      {num("min_sample", "Devices per stage")}
      {num("max_failure_rate", "Pause above failure (%)")}
      {num("failure_min_sample", "Judged after devices")}
      <button type="submit">Start rollout</button>
      <ErrorNote error={error} />
    </form>
  );
}

export function Releases() {
  const { api } = useSession();
  const canRelease = useMay("releaser");
  const releases = usePoll(() => api.get<{ releases: Release[] }>("/releases"), "releases", 10000);
  const images = usePoll(() => api.get<{ images: Image[] }>("/firmware"), "images");
  const [starting, setStarting] = useState<string | null>(null);
  return (
    <Page title="Releases">
      {canRelease && images.data ? <CreateRelease images={images.data.images} onDone={releases.reload} /> : null}
      <ErrorNote error={releases.error} />
      {!releases.data ? (
        <Loading what="releases" />
      ) : (
        <table class="list" aria-label="releases">
          <thead>
            <tr>
              <th>Release</th>
              <th>Version</th>
              <th>Chip</th>
              <th>Channel</th>
              <th>Targets</th>
              <th>Rollout</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {releases.data.releases.map((r) => (
              <tr key={r.name} data-release={r.name}>
                <td>
                  {r.name}
                  {r.notes ? <div class="muted small">{r.notes}</div> : null}
                </td>
                <td>{r.image.version}</td>
                <td>{r.image.chip}</td>
                <td>{r.channel}</td>
                <td>{[...r.targets.groups.map((g) => `group ${g}`), ...r.targets.tags.map((t) => `tag ${t}`), ...(r.targets.devices.length ? [`${r.targets.devices.length} devices`] : [])].join(", ") || "whole channel"}</td>
                <td>
                  {r.rollout ? (
                    <a href={`#/rollouts/${encodeURIComponent(r.rollout.id)}`}>
                      <Badge value={r.rollout.state} /> {r.rollout.stage_percent} %
                    </a>
                  ) : canRelease ? (
                    starting === r.name ? (
                      <StartRollout release={r.name} onDone={releases.reload} />
                    ) : (
                      <button type="button" onClick={() => setStarting(r.name)}>
                        Roll out…
                      </button>
                    )
                  ) : (
                    <span class="muted">not rolled out</span>
                  )}
                </td>
                <td>
                  <Ago at={r.created_at} /> by {r.created_by}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {releases.data?.releases.length === 0 ? <p class="muted">No release yet.</p> : null}
    </Page>
  );
}
