// Small building blocks the pages share: error notes, counts with bars, times, tables.
import type { ComponentChildren } from "preact";
import type { ApiError } from "../api/client";

export function ErrorNote({ error }: { error: ApiError | undefined }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {error.message} <code>{error.code}</code>
      {error.reason ? <> (reason: <code>{error.reason}</code>)</> : null}
    </p>
  );
}

export function Loading({ what }: { what: string }) {
  return <p class="muted">Loading {what}…</p>;
}

/** "12 s ago", "5 min ago", "3 h ago", "2 d ago"; the exact time as a tooltip. */
export function Ago({ at }: { at: string | null | undefined }) {
  if (!at) return <span class="muted">never</span>;
  const s = Math.max(0, Math.round((Date.now() - Date.parse(at)) / 1000));
  const text = s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : s < 172800 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`;
  return (
    <time dateTime={at} title={at}>
      {text}
    </time>
  );
}

export function Bytes({ n }: { n: number | null | undefined }) {
  if (n == null) return <span class="muted">–</span>;
  const text = n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(2)} MiB`;
  return <span title={`${n} bytes`}>{text}</span>;
}

export function Badge({ value, kind }: { value: string | null; kind?: string }) {
  return <span class={`badge ${kind ?? "state-" + (value ?? "unknown")}`}>{value ?? "unknown"}</span>;
}

/** A labelled list of counts, each with a bar relative to the total (a <meter>: no inline style needed). */
export function CountBars({
  title,
  rows,
  total,
  href,
  none = "unknown",
}: {
  title: string;
  rows: { value: string | null; devices: number }[];
  total: number;
  href?: (value: string) => string;
  /** What a null value means here. */
  none?: string;
}) {
  return (
    <section class="card" aria-label={title}>
      <h3>{title}</h3>
      {rows.length === 0 ? <p class="muted">No devices yet.</p> : null}
      <table class="bars">
        <tbody>
          {rows.map((r) => (
            <tr key={String(r.value)} data-value={r.value ?? ""}>
              <th scope="row">{r.value !== null && href ? <a href={href(r.value)}>{r.value}</a> : (r.value ?? <span class="muted">{none}</span>)}</th>
              <td class="num">{r.devices}</td>
              <td class="bar">
                <meter min={0} max={Math.max(total, 1)} value={r.devices} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function Stat({ label, value, kind }: { label: string; value: number | string; kind?: string }) {
  return (
    <div class={`stat ${kind ?? ""}`} data-stat={label}>
      <span class="value">{value}</span>
      <span class="label">{label}</span>
    </div>
  );
}

export function Page({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <>
      <div class="page-head">
        <h2>{title}</h2>
        {actions}
      </div>
      {children}
    </>
  );
}
