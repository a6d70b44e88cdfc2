// https:// URLs only for the server: the API key travels in a header, so nothing is ever sent in the clear.
// The MQTT broker's URL may be mqtt:// (plain TCP) or mqtts:// (TLS): a notice is authenticated by its own HMAC.

import { fail } from "./errors"

export interface Url {
    host: string
    port: number
    /** What goes into the Host header ("example.com" or "example.com:8443"). */
    hostHeader: string
    /** Path and query, starting with "/". */
    path: string
}

function allDigits(s: string): boolean {
    if (s.length === 0) return false
    for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i)
        if (c < 48 || c > 57) return false
    }
    return true
}

export function parseUrl(text: string): Url {
    if (typeof text !== "string" || !text.startsWith("https://"))
        fail("bad_url", "only https:// URLs are used: " + text)
    return parseAfterScheme(text, 8, 443)
}

export interface BrokerUrl {
    host: string
    port: number
    tls: boolean
}

/** mqtt://host[:port] (default 1883) or mqtts://host[:port] (default 8883); no credentials in the URL. */
export function parseBrokerUrl(text: string): BrokerUrl {
    let tls = false
    let skip = 7
    if (typeof text === "string" && text.startsWith("mqtts://")) {
        tls = true
        skip = 8
    } else if (typeof text !== "string" || !text.startsWith("mqtt://")) fail("bad_url", "only mqtt:// and mqtts:// URLs are used: " + text)
    const u = parseAfterScheme(text, skip, tls ? 8883 : 1883)
    return { host: u.host, port: u.port, tls: tls }
}

function parseAfterScheme(text: string, skip: number, defaultPort: number): Url {
    const rest = text.slice(skip)
    const slash = rest.indexOf("/")
    const authority = slash < 0 ? rest : rest.slice(0, slash)
    const path = slash < 0 ? "/" : rest.slice(slash)
    let host = authority
    let port = defaultPort
    let portText = ""
    if (authority.startsWith("[")) {
        const close = authority.indexOf("]")
        if (close < 0) fail("bad_url", "unclosed IPv6 address in " + text)
        host = authority.slice(1, close)
        if (authority.length > close + 1) {
            if (authority.charCodeAt(close + 1) !== 58) fail("bad_url", text)
            portText = authority.slice(close + 2)
        }
    } else {
        const colon = authority.indexOf(":")
        if (colon >= 0) {
            host = authority.slice(0, colon)
            portText = authority.slice(colon + 1)
        }
    }
    if (portText !== "") {
        if (!allDigits(portText)) fail("bad_url", "bad port in " + text)
        port = parseInt(portText)
        if (port < 1 || port > 65535) fail("bad_url", "bad port in " + text)
    }
    if (host.length === 0 || host.indexOf("@") >= 0 || host.indexOf(" ") >= 0)
        fail("bad_url", "bad host in " + text)
    return { host: host, port: port, hostHeader: authority, path: path }
}

/** The server's base URL with an API path appended ("/firmware/manifest"). */
export function apiUrl(base: Url, apiPath: string): Url {
    let p = base.path
    while (p.endsWith("/")) p = p.slice(0, p.length - 1)
    return { host: base.host, port: base.port, hostHeader: base.hostHeader, path: p + apiPath }
}
