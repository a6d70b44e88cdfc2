// What the `ota` command exits with (docs/operations.md lists these).
export const EXIT = {
  ok: 0,
  /** The server failed (5xx), could not be reached, or something unexpected happened. */
  failure: 1,
  /** Bad arguments or environment. */
  usage: 2,
  /** Not logged in, or the server refused the token (401, 403). */
  auth: 3,
  /** What was named does not exist (404). */
  notFound: 4,
  /** The server refused the request as it stands (409, 413, 422, other 4xx). */
  refused: 5,
  /** `rollout watch`: the rollout paused (by itself or an operator). */
  paused: 6,
  /** `rollout watch`: the rollout was aborted. */
  aborted: 7,
  /** `verify`: no signature block verifies under the keys given; `sign`: a detached signature does not verify. */
  signature: 8,
  /** `rollout watch --timeout`: the rollout neither completed, paused nor was aborted in that time. */
  timeout: 9,
} as const;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export class UsageError extends CliError {
  constructor(message: string) {
    super(message, EXIT.usage);
  }
}

export function exitCodeForStatus(status: number): number {
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 404) return EXIT.notFound;
  if (status >= 400 && status < 500) return EXIT.refused;
  return EXIT.failure;
}
