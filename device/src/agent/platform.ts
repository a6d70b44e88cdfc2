// What the agent needs from the device it runs on. src/platform/ provides it with the DeviceScript runtime
// (the same code on an ESP32 and in the host emulator); nothing under src/agent/ talks to hardware itself.

import { BrokerUrl, Url } from "./url"

export interface HttpRequest {
    method: string
    url: Url
    /** Extra header lines, "Name: value". */
    headers: string[]
    body?: string
    /** Read the body into this buffer; the response must be exactly `intoLength` bytes long. */
    into?: Buffer
    /** Bytes to read into `into` (default: all of it). */
    intoLength?: number
    /** Largest body accepted when `into` is not given. */
    maxBody?: number
}

export interface HttpResponse {
    status: number
    contentLength: number
    /** "" when the header is absent. */
    contentRange: string
    etag: string
    manifestMac: string
    /** Seconds; 0 when absent. */
    retryAfter: number
    /** The body, or null when it went into `into` or there was none. */
    body: Buffer
}

/** HTTPS with one connection at a time (the VM has one socket); every body must carry Content-Length. */
export interface Http {
    request(req: HttpRequest): Promise<HttpResponse>
    close(): Promise<void>
}

export interface MqttMessage {
    payload: Buffer
    /** Sent by the broker from its retained store (at subscription), not forwarded live. */
    retained: boolean
}

/**
 * An MQTT 3.1.1 subscription to one topic. It uses the device's one socket: the agent opens it only while no
 * HTTPS exchange is under way, and closes it before the next.
 */
export interface Mqtt {
    /** Connects, logs in and subscribes (QoS 1); throws when any of it fails. */
    open(broker: BrokerUrl, clientId: string, user: string, pass: string, topic: string, keepaliveS: number): Promise<void>
    /**
     * The next message on the topic, or null when none came within `ms`. Keeps the connection alive meanwhile;
     * throws when it is lost. A message too large to hold comes with an empty payload.
     */
    next(ms: number): Promise<MqttMessage>
    close(): Promise<void>
}

/** What the native writer says about the running image and the device. */
export interface WriterInfo {
    runningSlot: number
    imageState: number
    runningVersion: string
    secureVersion: number
    /** Hex. */
    runningSha256: string
    chip: string
    chipRevision: number
    slotSize: number
    bulkWriteMax: number
    /** Bit i: eFuse key digest slot i is burnt and not revoked (0: the chip checks no signatures). */
    trustedKeys: number
    /** Bit i: the running image has a signature block valid under the digest in slot i. */
    runningSigners: number
}

/** Writer statuses and image states (device/services/otawriter.md). */
export const W_OK = 0
export const W_GAP = 2
export const STATE_NEW = 0
export const STATE_PENDING_VERIFY = 1
export const STATE_VALID = 2

export interface EndResult {
    status: number
    reason: string
}

/** The native OTA writer (device/services/otawriter.md). Methods return the writer's status. */
export interface Writer {
    ready(): Promise<void>
    info(): Promise<WriterInfo>
    begin(size: number): Promise<number>
    resume(size: number, offset: number): Promise<number>
    /** Writes the first `length` bytes of `data` at `offset`, several pieces in flight; resolves once all of it is acknowledged. */
    write(data: Buffer, offset: number, length: number): Promise<void>
    end(sha256: Buffer): Promise<EndResult>
    setBoot(): Promise<number>
    markValid(): Promise<number>
    /** The running image's state (STATE_*), read again from the writer. */
    imageState(): Promise<number>
    markInvalidAndReboot(): Promise<number>
    /** Revokes the eFuse key digest in slot `index` for good (esp_ota_revoke_secure_boot_public_key). */
    revokeKey(index: number): Promise<number>
}

/** Settings that survive resets and power cuts. Values are JSON. */
export interface Store {
    read(key: string): Promise<any>
    /** `durable`: resolve only once the value is in flash (a reset right after keeps it). */
    write(key: string, value: any, durable: boolean): Promise<void>
    remove(key: string): Promise<void>
}

export interface System {
    millis(): number
    sleep(ms: number): Promise<void>
    /** Uniform in [0, 1). */
    random(): number
    randomHex(bytes: number): string
    sha256(parts: Buffer[]): Buffer
    hmacSha256(key: Buffer, data: Buffer): Buffer
    /** One machine-readable line per state change. */
    emit(event: any): void
    log(message: string): void
    reboot(): void
}

export interface Platform {
    http: Http
    /** null: the device has no MQTT client. */
    mqtt: Mqtt
    writer: Writer
    store: Store
    sys: System
}
