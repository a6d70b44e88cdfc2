// The strict head reader behind the poll layer: it must say "head" only for what it fully understood, and hand
// everything else ("other") to Node's parser; a head still arriving is "incomplete".
import { MAX_HEAD_BYTES, readRequestHead } from "../../server/http/request-head";

const read = (text: string) => readRequestHead(Buffer.from(text, "latin1"));

describe("readRequestHead", () => {
  it("reads a plain head, with lower-cased names, trimmed values and its length", () => {
    const text = "GET /firmware/manifest HTTP/1.1\r\nHost: ota.example:8443\r\nX-Device-Id:  dev-1 \r\nIf-None-Match: \"a\", \"b\"\r\nX-Empty:\r\n\r\nGET /next";
    const r = read(text);
    expect(r).toEqual({
      kind: "head",
      head: {
        method: "GET",
        target: "/firmware/manifest",
        headers: { host: "ota.example:8443", "x-device-id": "dev-1", "if-none-match": '"a", "b"', "x-empty": "" },
        length: text.indexOf("GET /next"),
      },
    });
  });

  it("waits for the rest of a head, up to the size limit", () => {
    expect(read("GET /firmware/manifest HTTP/1.1\r\nHost: a\r\n").kind).toBe("incomplete");
    expect(read("GET / HTTP/1.1\r\nX-Pad: " + "a".repeat(MAX_HEAD_BYTES)).kind).toBe("other");
    expect(read("GET / HTTP/1.1\r\nX-Pad: " + "a".repeat(MAX_HEAD_BYTES) + "\r\n\r\n").kind).toBe("other");
  });

  it.each([
    ["HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\n\r\n"],
    ["an absolute target", "GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n"],
    ["a lower-case method", "get / HTTP/1.1\r\nHost: a\r\n\r\n"],
    ["two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"],
    ["a repeated header", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"],
    ["obs-fold", "GET / HTTP/1.1\r\nHost: a\r\n continued\r\n\r\n"],
    ["a bare LF", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"],
    ["a bare CR", "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n"],
    ["a space before the colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n"],
    ["a control byte", "GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n"],
    ["a non-ASCII byte", "GET / HTTP/1.1\r\nHost: a\xffb\r\n\r\n"],
    ["a line without a colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n"],
    ["too many headers", "GET / HTTP/1.1\r\n" + Array.from({ length: 65 }, (_, i) => `X-${i}: v`).join("\r\n") + "\r\n\r\n"],
  ])("leaves %s to Node's parser", (_what, text) => {
    expect(read(text).kind).toBe("other");
  });
});
