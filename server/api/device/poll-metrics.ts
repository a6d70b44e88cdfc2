// Counts device polls by what they came to (ota_polls_total): manifest requests and requests to
// OTA_HTTPUPDATE_PATH, told by the request log when each answer is done. The outcome follows from the status,
// and each status's one code (server/api/http/error-codes.ts). A count is the increment of a plain number, read
// into the counter when Prometheus scrapes: a poll pays a few nanoseconds for it and allocates nothing.
import type { AnswerObserver } from "../http/request-log";
import type { PollCounts, PollOutcome } from "../../infra/metrics/metrics";

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

export function countPolls(polls: PollCounts, httpUpdatePath: string): AnswerObserver {
  return (url, status, completed) => {
    if (isPath(url, "/firmware/manifest")) polls.manifest[outcomeOf(status, completed)]++;
    else if (isPath(url, httpUpdatePath)) polls.http_update[outcomeOf(status, completed)]++;
  };
}
