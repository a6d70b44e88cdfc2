// A small HTTP/1.1 client over the runtime's TLS socket. The VM has one socket at a time and reads arrive in
// pieces of at most 1 KiB (the ESP32's socket buffer), so bodies are read straight into a buffer of the
// size Content-Length announces; a response without Content-Length is refused (nothing chunked is read).
// The connection is kept open between requests to the same server and closed on any error.

import { Socket, connect } from "@devicescript/net"
import { Http, HttpRequest, HttpResponse } from "../agent/platform"

const MAX_HEADER_LINES = 64

function parseStatus(line: string): number {
    // "HTTP/1.1 206 Partial Content"
    if (!line || !line.startsWith("HTTP/1.")) return 0
    const sp = line.indexOf(" ")
    const code = parseInt(line.slice(sp + 1, sp + 4))
    return code >= 100 && code <= 599 ? code : 0
}

export class SocketHttp implements Http {
    private sock: Socket = null
    private origin = ""
    private timeoutMs: number

    constructor(timeoutMs: number) {
        this.timeoutMs = timeoutMs
    }

    setTimeout(ms: number) {
        this.timeoutMs = ms
    }

    async close(): Promise<void> {
        const s = this.sock
        this.sock = null
        this.origin = ""
        if (s) await s.close()
    }

    async request(req: HttpRequest): Promise<HttpResponse> {
        const origin = req.url.host + ":" + req.url.port
        const reused = this.sock !== null && this.origin === origin
        try {
            return await this.attempt(req, origin)
        } catch (e) {
            await this.close()
            // A kept-alive connection the server has since closed fails at once: try again on a fresh one.
            if (reused && (e as any).message === "closed") return await this.attempt(req, origin)
            throw e
        }
    }

    private async attempt(req: HttpRequest, origin: string): Promise<HttpResponse> {
        if (!this.sock || this.origin !== origin) {
            await this.close()
            this.sock = await connect({ host: req.url.host, port: req.url.port, proto: "tls", timeout: this.timeoutMs })
            this.origin = origin
        }
        const s = this.sock
        let head = req.method + " " + req.url.path + " HTTP/1.1\r\nHost: " + req.url.hostHeader + "\r\n"
        for (let i = 0; i < req.headers.length; i++) head = head + req.headers[i] + "\r\n"
        const body = req.body ? Buffer.from(req.body) : null
        if (body) head = head + "Content-Length: " + body.length + "\r\n"
        await s.send(head + "\r\n")
        if (body) await s.send(body)

        const status = parseStatus(await s.readLine())
        if (status === 0) throw new Error("closed")
        const res: HttpResponse = {
            status: status,
            contentLength: -1,
            contentRange: "",
            etag: "",
            manifestMac: "",
            retryAfter: 0,
            body: null,
        }
        let keepAlive = true
        for (let n = 0; ; n++) {
            const line = await s.readLine()
            if (line === null) throw new Error("connection closed in the response headers")
            if (line === "") break
            if (n > MAX_HEADER_LINES) throw new Error("too many response headers")
            const colon = line.indexOf(":")
            if (colon <= 0) continue
            const name = line.slice(0, colon).toLowerCase()
            const value = line.slice(colon + 1).trim()
            if (name === "content-length") res.contentLength = parseInt(value)
            else if (name === "content-range") res.contentRange = value
            else if (name === "etag") res.etag = value
            else if (name === "x-manifest-hmac") res.manifestMac = value
            else if (name === "retry-after") res.retryAfter = parseInt(value)
            else if (name === "connection" && value.toLowerCase() === "close") keepAlive = false
            else if (name === "transfer-encoding") throw new Error("chunked responses are not supported")
        }

        const noBody = req.method === "HEAD" || status === 204 || status === 304
        if (!noBody) {
            if (!(res.contentLength >= 0)) throw new Error("response without Content-Length")
            const ok = status === 200 || status === 206
            if (req.into && ok) {
                const want = req.intoLength !== undefined ? req.intoLength : req.into.length
                if (res.contentLength !== want)
                    throw new Error("expected " + want + " bytes, the server sends " + res.contentLength)
                await this.readBody(s, req.into, want)
            } else {
                const max = req.maxBody ? req.maxBody : 2048
                if (res.contentLength > max) throw new Error("response body of " + res.contentLength + " bytes is too large")
                const b = Buffer.alloc(res.contentLength)
                await this.readBody(s, b, b.length)
                res.body = b
            }
        }
        if (!keepAlive) await this.close()
        return res
    }

    private async readBody(s: Socket, into: Buffer, length: number): Promise<void> {
        let got = 0
        while (got < length) {
            const piece = await s.recv(this.timeoutMs)
            if (piece === undefined) throw new Error("read timed out after " + got + " of " + length + " bytes")
            if (piece === null) throw new Error("connection closed after " + got + " of " + length + " bytes")
            if (piece.length > length - got) throw new Error("the server sent more than Content-Length")
            into.blitAt(got, piece, 0, piece.length)
            got += piece.length
        }
    }
}
