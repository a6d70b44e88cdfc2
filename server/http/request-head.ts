// A strict reader of HTTP/1.1 request heads, for the requests the server answers below Node's HTTP layer
// (device-api/device-connection.ts). It recognises only the plainest well-formed head: a request line, header
// lines of visible ASCII, CRLF line ends, no repeated header. Anything else is "other", and the connection goes
// to Node's own parser (llhttp), which answers or refuses it exactly as for any other connection: this reader
// never has to decide what is malformed, only what is certainly plain.

/** A request head read in full. Header names are lower-cased; values have surrounding blanks removed. */
export interface RequestHead {
  method: string;
  target: string;
  headers: Record<string, string>;
  /** Bytes the head takes, its closing blank line included. */
  length: number;
}

export type HeadRead = { kind: "head"; head: RequestHead } | { kind: "incomplete" } | { kind: "other" };

const REQUEST_LINE_RE = /^([A-Z]{1,16}) (\/[\x21-\x7e]{0,2047}) HTTP\/1\.1$/;
// token ":" OWS value OWS, the value visible ASCII with inner blanks (RFC 9110 5.5, without obs-text or obs-fold)
const HEADER_LINE_RE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}):[ \t]*((?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?)[ \t]*$/;
const END = Buffer.from("\r\n\r\n", "latin1");

export const MAX_HEAD_BYTES = 8192;
export const MAX_HEADERS = 64;

/** Reads the request head at the start of `buf`. */
export function readRequestHead(buf: Buffer): HeadRead {
  const end = buf.indexOf(END, 0);
  if (end < 0) return buf.length > MAX_HEAD_BYTES ? { kind: "other" } : { kind: "incomplete" };
  if (end + 4 > MAX_HEAD_BYTES) return { kind: "other" };
  const lines = buf.toString("latin1", 0, end).split("\r\n");
  if (lines.length - 1 > MAX_HEADERS) return { kind: "other" };
  const start = REQUEST_LINE_RE.exec(lines[0]!);
  if (!start) return { kind: "other" };
  const headers: Record<string, string> = Object.create(null);
  for (let i = 1; i < lines.length; i++) {
    const m = HEADER_LINE_RE.exec(lines[i]!);
    if (!m) return { kind: "other" }; // a bare CR or LF, obs-fold, a control or non-ASCII byte, a bad name
    const name = m[1]!.toLowerCase();
    if (name in headers) return { kind: "other" }; // how repeats combine is the real parser's business
    headers[name] = m[2]!;
  }
  return { kind: "head", head: { method: start[1]!, target: start[2]!, headers, length: end + 4 } };
}
