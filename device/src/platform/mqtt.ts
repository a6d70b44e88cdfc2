// A minimal MQTT 3.1.1 subscriber over the runtime's one socket (plain TCP for mqtt://, TLS for mqtts://): CONNECT
// with a clean session, one SUBSCRIBE at QoS 1, PUBLISH in (acknowledged), PINGREQ at the keep-alive period.
// Nothing runs in the background: the connection is served only while the agent waits in next(), and the
// agent closes it before any HTTPS exchange. Packets are read straight from the socket's pieces; one larger
// than MAX_PACKET is skipped, never held.

import * as ds from "@devicescript/core"
import { Socket, connect } from "@devicescript/net"
import { Mqtt, MqttMessage } from "../agent/platform"
import { BrokerUrl } from "../agent/url"

/** Largest packet held in memory (a notice is well under 1 KiB; the shipped broker allows 4 KiB). */
const MAX_PACKET = 2048

const CONNECT = 0x10
const CONNACK = 2
const PUBLISH = 3
const PUBACK = 0x40
const SUBSCRIBE = 0x82
const SUBACK = 9
const PINGREQ = 0xc0
const PINGRESP = 13
const DISCONNECT = 0xe0

function withLength(s: string): Buffer {
    const b = Buffer.from(s)
    const out = Buffer.alloc(2 + b.length)
    out[0] = b.length >> 8
    out[1] = b.length & 255
    out.blitAt(2, b, 0, b.length)
    return out
}

function packet(header: number, parts: Buffer[]): Buffer {
    let len = 0
    for (let i = 0; i < parts.length; i++) len += parts[i].length
    let lenBytes = 1
    for (let x = len; x >= 128; x = Math.floor(x / 128)) lenBytes++
    const out = Buffer.alloc(1 + lenBytes + len)
    out[0] = header
    let x = len
    for (let i = 0; i < lenBytes; i++) {
        let d = x % 128
        x = Math.floor(x / 128)
        if (x > 0) d = d | 128
        out[1 + i] = d
    }
    let at = 1 + lenBytes
    for (let i = 0; i < parts.length; i++) {
        out.blitAt(at, parts[i], 0, parts[i].length)
        at += parts[i].length
    }
    return out
}

export class SocketMqtt implements Mqtt {
    private sock: Socket = null
    private timeoutMs: number
    /** The piece being read and the position in it. */
    private piece: Buffer = null
    private pos = 0
    /** The last packet's body (null when it was too large to hold). */
    private body: Buffer = null
    private topic = ""
    private keepaliveMs = 60000
    private pingAt = 0
    private pongDue = false
    /** A message that came before the SUBACK. */
    private early: MqttMessage = null

    constructor(timeoutMs: number) {
        this.timeoutMs = timeoutMs
    }

    setTimeout(ms: number) {
        this.timeoutMs = ms
    }

    async open(broker: BrokerUrl, clientId: string, user: string, pass: string, topic: string, keepaliveS: number): Promise<void> {
        await this.close()
        this.topic = topic
        this.keepaliveMs = keepaliveS * 1000
        this.sock = await connect({ host: broker.host, port: broker.port, proto: broker.tls ? "tls" : "tcp", timeout: this.timeoutMs })
        // Variable header: protocol name, level 4 (3.1.1), flags, keep-alive; then the payload's strings.
        const vh = Buffer.alloc(10)
        vh.blitAt(0, withLength("MQTT"), 0, 6)
        vh[6] = 4
        vh[7] = 0x02 // clean session: nothing is kept for the device between connections
        if (user !== "") vh[7] = vh[7] | 0x80
        if (pass !== "") vh[7] = vh[7] | 0x40
        vh[8] = keepaliveS >> 8
        vh[9] = keepaliveS & 255
        const parts: Buffer[] = [vh, withLength(clientId)]
        if (user !== "") parts.push(withLength(user))
        if (pass !== "") parts.push(withLength(pass))
        await this.sock.send(packet(CONNECT, parts))
        const ack = await this.read(this.timeoutMs)
        if (ack < 0) throw new Error("mqtt: no CONNACK")
        if (ack >> 4 !== CONNACK || !this.body || this.body.length < 2) throw new Error("mqtt: unexpected answer to CONNECT")
        if (this.body[1] !== 0) throw new Error("mqtt: connection refused, code " + this.body[1])

        const pid = Buffer.alloc(2)
        pid[1] = 1
        const qos = Buffer.alloc(1)
        qos[0] = 1
        await this.sock.send(packet(SUBSCRIBE, [pid, withLength(topic), qos]))
        for (;;) {
            const h = await this.read(this.timeoutMs)
            if (h < 0) throw new Error("mqtt: no SUBACK")
            if (h >> 4 === SUBACK) {
                if (!this.body || this.body.length < 3 || this.body[2] >= 0x80) throw new Error("mqtt: subscription refused")
                break
            }
            if (h >> 4 === PUBLISH) {
                const m = await this.publish(h)
                if (m) this.early = m
            }
        }
        this.pingAt = ds.millis() + this.keepaliveMs
        this.pongDue = false
    }

    async next(ms: number): Promise<MqttMessage> {
        if (!this.sock) throw new Error("mqtt: not connected")
        if (this.early) {
            const m = this.early
            this.early = null
            return m
        }
        const until = ds.millis() + ms
        for (;;) {
            const now = ds.millis()
            if (now >= this.pingAt) {
                if (this.pongDue) throw new Error("mqtt: the broker does not answer pings")
                await this.sock.send(packet(PINGREQ, []))
                this.pongDue = true
                this.pingAt = now + this.keepaliveMs
            }
            if (now >= until) return null
            const h = await this.read(Math.min(until, this.pingAt) - now)
            if (h < 0) continue
            const type = h >> 4
            if (type === PINGRESP) this.pongDue = false
            else if (type === PUBLISH) {
                const m = await this.publish(h)
                if (m) return m
            }
        }
    }

    async close(): Promise<void> {
        const s = this.sock
        this.sock = null
        this.piece = null
        this.body = null
        this.early = null
        if (!s) return
        try {
            await s.send(packet(DISCONNECT, []))
        } catch (e) {
            // already gone
        }
        await s.close()
    }

    /** The PUBLISH just read, acknowledged when QoS 1; null when it is for another topic. */
    private async publish(h: number): Promise<MqttMessage> {
        const b = this.body
        const retained = (h & 1) === 1
        if (!b) return { payload: Buffer.alloc(0), retained: false }
        const tl = (b[0] << 8) | b[1]
        let at = 2 + tl
        const qos = (h >> 1) & 3
        if (qos > 0) {
            await this.sock.send(packet(PUBACK, [b.slice(at, at + 2)]))
            at += 2
        }
        if (b.slice(2, 2 + tl).toString() !== this.topic) return null
        return { payload: b.slice(at), retained: retained }
    }

    /** One byte, or -1 when nothing came within `ms`. Throws when the connection ends. */
    private async byte(ms: number): Promise<number> {
        while (!this.piece || this.pos >= this.piece.length) {
            const b = await this.sock.recv(ms)
            if (b === undefined) return -1
            if (b === null) throw new Error("mqtt: connection closed")
            this.piece = b
            this.pos = 0
        }
        return this.piece[this.pos++]
    }

    /** Reads one packet: returns its first byte (body in this.body), or -1 when none began within `ms`. */
    private async read(ms: number): Promise<number> {
        const h = await this.byte(ms)
        if (h < 0) return -1
        let len = 0
        let mul = 1
        for (let i = 0; ; i++) {
            const d = await this.byte(this.timeoutMs)
            if (d < 0) throw new Error("mqtt: read timed out")
            len += (d & 127) * mul
            mul *= 128
            if ((d & 128) === 0) break
            if (i >= 3) throw new Error("mqtt: bad packet length")
        }
        const keep = len <= MAX_PACKET
        this.body = keep ? Buffer.alloc(len) : null
        let got = 0
        while (got < len) {
            if (await this.byte(this.timeoutMs) < 0) throw new Error("mqtt: read timed out")
            this.pos--
            const n = Math.min(len - got, this.piece.length - this.pos)
            if (keep) this.body.blitAt(got, this.piece, this.pos, n)
            this.pos += n
            got += n
        }
        return h
    }
}
