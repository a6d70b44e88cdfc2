// The device agent's entry point: the DeviceScript platform (src/platform/) plugged into the agent
// (src/agent/). The same bytecode runs on an ESP32 and in the host emulator (device/host/).

import { runAgent, waitForConfig } from "./agent/agent"
import { SocketHttp } from "./platform/http"
import { SocketMqtt } from "./platform/mqtt"
import { DeviceSystem, SettingsStore } from "./platform/system"
import { OtaWriterClient } from "./platform/writer"

const sys = new DeviceSystem()
const store = new SettingsStore()
const http = new SocketHttp(20000)
const writer = new OtaWriterClient(true)
const cfg = await waitForConfig({ http: http, mqtt: null, writer: writer, store: store, sys: sys })
http.setTimeout(cfg.timeoutMs)
writer.setBulk(cfg.writeMode !== "command")
// The MQTT client exists only on a device given a broker: without one, the agent's heap is as it was without MQTT.
const mqtt = cfg.mqtt ? new SocketMqtt(cfg.timeoutMs) : null
await runAgent({ http: http, mqtt: mqtt, writer: writer, store: store, sys: sys }, cfg)
