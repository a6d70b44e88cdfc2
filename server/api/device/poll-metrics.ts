// Counts device polls by what they came to (ota_polls_total): manifest requests and requests to
// OTA_HTTPUPDATE_PATH, told by the request log when each answer is done. The outcome follows from the status,
// and each status's one code (server/api/http/error-codes.ts). Label sets are made once, so a poll's count
// allocates nothing of its own.
import type { AnswerObserver } from "../http/request-log";
import { POLL_OUTCOMES, type Metrics, type PollEndpoint, type PollOutcome } from "../../infra/metrics/metrics";

/** What a finished poll's status means. */
function outcomeOf(status: number, completed: boolean): PollOutcome {
  if (!completed) return "aborted";
  if (status === 200 || status === 206 || status === 302) return "offered";
  if (status === 304) return "not_modified";
  if (status === 404) return "no_firmware";
  if (status === 401 || status === 403) return "refused";
  if (status === 429) return "throttled";
  if (status >= 500) return "error";
  return "invalid";
}

/** Whether `url` is `path`, alone or followed by a query or a trailing slash. */
function isPath(url: string, path: string): boolean {
  if (!url.startsWith(path)) return false;
  const next = url.charCodeAt(path.length);
  return Number.isNaN(next) || next === 0x3f /* ? */ || next === 0x2f /* / */;
}

export function countPolls(polls: Metrics["polls"], httpUpdatePath: string): AnswerObserver {
  const labels = (endpoint: PollEndpoint) =>
    Object.fromEntries(POLL_OUTCOMES.map((outcome) => [outcome, { endpoint, outcome }])) as Record<PollOutcome, { endpoint: string; outcome: string }>;
  const manifest = labels("manifest");
  const httpUpdate = labels("http_update");
  return (url, status, completed) => {
    if (isPath(url, "/firmware/manifest")) polls.inc(manifest[outcomeOf(status, completed)]);
    else if (isPath(url, httpUpdatePath)) polls.inc(httpUpdate[outcomeOf(status, completed)]);
  };
}
