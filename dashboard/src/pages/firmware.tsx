// Firmware: the images the server has verified, the files it refused (with the reason), and, for releasers, an
// upload with a progress bar.
import { useState } from "preact/hooks";
import type { ApiError } from "../api/client";
import type { FirmwareFile, Image } from "../api/types";
import { usePoll } from "../components/poll";
import { useMay, useSession } from "../components/session";
import { Ago, Badge, Bytes, ErrorNote, Loading, Page } from "../components/ui";

type UploadState = { phase: "idle" } | { phase: "sending"; sent: number; total: number } | { phase: "done"; name: string; created: boolean } | { phase: "failed"; error: ApiError };

function Upload({ onDone }: { onDone: () => void }) {
  const { api } = useSession();
  const [file, setFile] = useState<File | null>(null);
  const [state, setState] = useState<UploadState>({ phase: "idle" });
  const send = async (e: Event) => {
    e.preventDefault();
    if (!file) return;
    setState({ phase: "sending", sent: 0, total: file.size });
    try {
      const r = await api.upload<{ name: string; created: boolean }>("/firmware", file, (sent, total) => setState({ phase: "sending", sent, total }));
      setState({ phase: "done", name: r.name, created: r.created });
      onDone();
    } catch (err) {
      setState({ phase: "failed", error: err as ApiError });
    }
  };
  const pct = state.phase === "sending" ? Math.floor((state.sent * 100) / Math.max(state.total, 1)) : state.phase === "done" ? 100 : 0;
  return (
    <section class="card" aria-label="upload">
      <h3>Upload an image</h3>
      <form class="inline" onSubmit={(e) => void send(e)}>
        <input type="file" name="file" accept=".bin,application/octet-stream" onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)} />
        <button type="submit" disabled={!file || state.phase === "sending"}>
          Upload
        </button>
      </form>
      {state.phase !== "idle" ? (
        <div class="upload-progress">
          <progress aria-label="upload progress" max={100} value={pct} /> <span class="pct">{pct} %</span>
        </div>
      ) : null}
      {state.phase === "done" ? (
        <p class="ok-note" role="status">
          {state.created ? "Uploaded" : "Already there"}: {state.name}
        </p>
      ) : null}
      {state.phase === "failed" ? <ErrorNote error={state.error} /> : null}
    </section>
  );
}

export function Firmware() {
  const { api } = useSession();
  const canUpload = useMay("releaser");
  const images = usePoll(() => api.get<{ images: Image[] }>("/firmware"), "images", 10000);
  const files = usePoll(() => api.get<{ files: FirmwareFile[] }>("/firmware/rejected"), "rejected", 10000);
  const reload = () => {
    images.reload();
    files.reload();
  };
  return (
    <Page title="Firmware">
      {canUpload ? <Upload onDone={reload} /> : null}
      <h3>Images</h3>
      <ErrorNote error={images.error} />
      {!images.data ? (
        <Loading what="images" />
      ) : (
        <table class="list" aria-label="images">
          <thead>
            <tr>
              <th>Version</th>
              <th>Project</th>
              <th>Chip</th>
              <th>Size</th>
              <th>Files</th>
              <th>SHA-256</th>
              <th>Signed by</th>
              <th>Ingested</th>
            </tr>
          </thead>
          <tbody>
            {images.data.images.map((i) => (
              <tr key={i.sha256}>
                <td>
                  {i.version} {i.offered ? <Badge value="offered" kind="ok" /> : null}
                </td>
                <td>{i.project}</td>
                <td>{i.chip}</td>
                <td>
                  <Bytes n={i.size} />
                </td>
                <td>{i.files.join(", ")}</td>
                <td>
                  <code title={i.sha256}>{i.sha256.slice(0, 12)}…</code>
                </td>
                <td>{i.signed_by ? <code>{i.signed_by.key_digest.slice(0, 12)}…</code> : "–"}</td>
                <td>
                  <Ago at={i.last_ingested_at} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {images.data?.images.length === 0 ? <p class="muted">No image yet: upload one, or drop it into the firmware folder.</p> : null}
      <h3>Refused and incomplete files</h3>
      <ErrorNote error={files.error} />
      {files.data && files.data.files.length === 0 ? <p class="muted">None.</p> : null}
      {files.data && files.data.files.length > 0 ? (
        <table class="list" aria-label="refused files">
          <thead>
            <tr>
              <th>File</th>
              <th>Status</th>
              <th>Reason</th>
              <th>Size</th>
              <th>From</th>
              <th>When</th>
            </tr>
          </thead>
          <tbody>
            {files.data.files.map((f) => (
              <tr key={f.name}>
                <td>{f.name}</td>
                <td>
                  <Badge value={f.status} kind="bad" />
                </td>
                <td>
                  {f.reason_code ? <code>{f.reason_code}</code> : null} {f.reason}
                </td>
                <td>
                  <Bytes n={f.size} />
                </td>
                <td>{f.source}</td>
                <td>
                  <Ago at={f.updated_at} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </Page>
  );
}
