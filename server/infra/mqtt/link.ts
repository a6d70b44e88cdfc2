// The server's connection to the MQTT broker (MQTT.js): connects, reconnects every second while the broker is
// away, logs each change of state (without credentials), and publishes retained QoS 1 messages, each resolved
// once the broker has acknowledged it (PUBACK).
import { EventEmitter } from "node:events";
import fs from "node:fs";
import mqtt, { type MqttClient } from "mqtt";
import type { Logger } from "pino";
import type { MqttConfig } from "../config/config";
import { ThrottledWarning } from "../logging/throttled-warning";

/** Emits "up" on each (re)connection and "down" when a connection is lost. */
export class MqttLink extends EventEmitter {
  private client: MqttClient | null = null;
  private wasUp = false;
  /** A broker that stays away fails every reconnection: one line a minute, with the count. */
  private failures: ThrottledWarning | null = null;

  constructor(
    private readonly config: MqttConfig,
    private readonly log: Logger,
  ) {
    super();
  }

  get connected(): boolean {
    return this.client?.connected === true;
  }

  start(): void {
    if (this.client) return;
    const c = this.config;
    const broker = c.url; // carries no credentials (config.ts takes them out)
    const client = mqtt.connect(c.url, {
      clientId: c.clientId,
      username: c.username ?? undefined,
      password: c.password ?? undefined,
      ...(c.ca ? { ca: fs.readFileSync(c.ca) } : {}),
      rejectUnauthorized: true,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      keepalive: 30,
    });
    this.client = client;
    const failures = new ThrottledWarning(this.log, "mqtt connection failed", { broker }, 60_000);
    this.failures = failures;
    client.on("connect", () => {
      failures.stop();
      this.wasUp = true;
      this.log.info({ broker, clientId: c.clientId }, "mqtt connected");
      this.emit("up");
    });
    client.on("close", () => {
      if (!this.wasUp) return;
      this.wasUp = false;
      this.log.warn({ broker }, "mqtt connection lost; reconnecting");
      this.emit("down");
    });
    client.on("error", (err: Error & { code?: string | number }) => {
      failures.note({ error: err.message, code: err.code });
    });
  }

  /** Publishes a retained QoS 1 message; resolves on the broker's PUBACK, rejects if the client gives it up. */
  publish(topic: string, payload: string): Promise<void> {
    const client = this.client;
    if (!client) return Promise.reject(new Error("mqtt link not started"));
    return new Promise((resolve, reject) => {
      client.publish(topic, payload, { qos: 1, retain: true }, (err) => (err ? reject(err) : resolve()));
    });
  }

  async stop(): Promise<void> {
    const client = this.client;
    if (!client) return;
    this.client = null;
    this.failures?.stop();
    this.failures = null;
    const wasUp = this.wasUp;
    this.wasUp = false; // the close that follows is ours, not a lost connection
    // Forced: what the broker has not acknowledged stays pending in the database and is published at the next start.
    await client.endAsync(true);
    if (wasUp) this.log.info({ broker: this.config.url }, "mqtt disconnected");
  }
}
