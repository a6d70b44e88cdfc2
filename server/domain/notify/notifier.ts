// Pushed update notices: when what a device would be offered changes (a release or rollout stage reaches it, a
// pause, a resume, an abort, a pin, a tag, its group or channel), a retained message on its MQTT topic tells it
// so, signed with its own MAC key and numbered (desired.ts). Polling stays the source of truth: a notice only
// makes a device poll early.
//
// Two loops, both off the request path and only while started (one process in a fleet of replicas runs it):
//  - the sweep recomputes the offers of the devices a change may concern (all of them for a release, rollout or
//    catalog change; one for a device change), in pages of PAGE devices, from the devices' stored facts and the
//    same rule the poll path uses (assign.ts, RolloutManager.includes). A device whose offer digest differs from
//    that of its last notice gets a new notice, stored as pending in mqtt_notices with the next seq.
//  - the sender publishes pending notices, paced at `rate` messages a second, while the broker is connected; a
//    notice stops being pending once the broker has acknowledged it (PUBACK). On every (re)connection and at
//    start, whatever is still pending is published again.
import { setTimeout as sleep } from "node:timers/promises";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import type { Catalog, CatalogImage } from "../catalog/catalog";
import type { DeviceRegistry } from "../devices/registry";
import { assign, type DeviceFacts } from "../releases/assign";
import type { ReleaseStore } from "../releases/release-store";
import type { MemberStatus } from "../rollouts/member-status";
import type { RolloutManager } from "../rollouts/rollout-manager";
import type { Credentials } from "../../infra/auth/credentials";
import type { Database, DeviceRow } from "../../infra/store/schema";
import { buildNotice, offerDigest, type NoticeOffer } from "./desired";

const DEFAULT_CHANNEL = "stable";
/** Devices read and recomputed per step of a sweep. */
const PAGE = 500;
/** Devices recomputed, or notices published, between two turns of the event loop for polls. */
const YIELD_EVERY = 25;
/** Notices published and not yet acknowledged, at most. */
const MAX_IN_FLIGHT = 1000;

/** What the sender needs of the broker connection (server/infra/mqtt/link.ts). */
export interface NoticeLink {
  readonly connected: boolean;
  start(): void;
  stop(): Promise<void>;
  publish(topic: string, payload: string): Promise<void>;
  on(event: "up" | "down", listener: () => void): unknown;
  off(event: "up" | "down", listener: () => void): unknown;
}

export interface NotifierDeps {
  db: Kysely<Database>;
  catalog: Pick<Catalog, "image" | "latest" | "on" | "off">;
  releases: Pick<ReleaseStore, "size" | "get" | "channel" | "channelUsesTags" | "on" | "off">;
  rollouts: Pick<RolloutManager, "includes" | "list" | "flush" | "on" | "off">;
  devices: Pick<DeviceRegistry, "view" | "tagsOf" | "on" | "off">;
  credentials: Pick<Credentials, "deviceMacKey">;
  link: NoticeLink;
  log: Logger;
  /** The base of the image URLs notices name (OTA_PUBLIC_URL, else this server). */
  baseUrl: () => string;
}

export interface NotifierOptions {
  /** Topic template ({device}). */
  topic: string;
  /** Also publish /firmware_update/<MAC-ID>. */
  compat: boolean;
  /** Messages per second, at most. */
  rate: number;
}

interface PendingRow {
  device_id: string;
  seq: number;
  topic: string;
  payload: string;
  compat_topic: string | null;
  compat_payload: string | null;
}

/** Lets pending I/O (polls) run before going on: never hold the event loop for a whole fleet. */
const yieldToIo = () => new Promise<void>((resolve) => setImmediate(resolve));

export class UpdateNotifier {
  private started = false;
  /** Devices whose offers to recompute: "all", or these ids. */
  private dirtyAll = false;
  private readonly dirty = new Set<string>();
  private sweeping: Promise<void> | null = null;
  private sending: Promise<void> | null = null;
  private wakeSender: (() => void) | null = null;
  /** Device id -> seq of the notice published and not yet acknowledged. */
  private readonly inFlight = new Map<string, number>();
  private acked: { deviceId: string; seq: number }[] = [];
  private ackWrite: Promise<void> = Promise.resolve();
  /** Pacing: messages sent since paceStart. */
  private paceStart = 0;
  private paceSent = 0;

  private readonly onAll = () => this.mark(null);
  private readonly onCatalog = () => {
    // The catalog decides offers only until the first release exists.
    if (this.deps.releases.size === 0) this.mark(null);
  };
  private readonly onDevice = (id: string) => this.mark(id);

  /** A device changed in another server process (its own events reach this one's registry only). */
  deviceChanged(id: string): void {
    this.mark(id);
  }
  private readonly onUp = () => {
    // A new connection: everything still pending is published again, including what was in flight on the old one.
    this.inFlight.clear();
    this.poke();
  };

  constructor(
    private readonly deps: NotifierDeps,
    private readonly opts: NotifierOptions,
  ) {}

  /** Connects, recomputes every device's offer (changes made while stopped included) and publishes what is pending. */
  start(): void {
    if (this.started) return;
    this.started = true;
    const d = this.deps;
    d.releases.on("changed", this.onAll);
    d.rollouts.on("changed", this.onAll);
    d.catalog.on("changed", this.onCatalog);
    d.devices.on("changed", this.onDevice);
    d.link.on("up", this.onUp);
    d.link.start();
    this.paceStart = Date.now();
    this.paceSent = 0;
    this.sending = this.sendLoop().catch((err: unknown) => this.deps.log.error({ err }, "mqtt notice sender stopped"));
    this.mark(null);
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    const d = this.deps;
    d.releases.off("changed", this.onAll);
    d.rollouts.off("changed", this.onAll);
    d.catalog.off("changed", this.onCatalog);
    d.devices.off("changed", this.onDevice);
    d.link.off("up", this.onUp);
    this.poke();
    await this.sweeping;
    await this.sending;
    await this.ackWrite;
    await this.writeAcks();
    await d.link.stop();
    this.inFlight.clear();
  }

  /** Resolves once every change noted so far has been recomputed and its notices stored (for tests and shutdown). */
  async settled(): Promise<void> {
    while (this.sweeping) await this.sweeping;
  }

  // ---- the sweep ----------------------------------------------------------------------------------------------

  /** Notes that a device's offer (null: every device's) may have changed. */
  private mark(id: string | null): void {
    if (!this.started) return;
    if (id === null) this.dirtyAll = true;
    else this.dirty.add(id);
    this.sweeping ??= this.sweepLoop().finally(() => {
      this.sweeping = null;
    });
  }

  private async sweepLoop(): Promise<void> {
    // Let the change that woke the sweep finish (and others arrive with it) before reading.
    await sleep(10);
    while (this.started && (this.dirtyAll || this.dirty.size > 0)) {
      const all = this.dirtyAll;
      const ids = [...this.dirty].sort();
      this.dirtyAll = false;
      this.dirty.clear();
      try {
        await this.sweep(all ? null : ids);
      } catch (err) {
        this.deps.log.error({ err }, "mqtt notices: recomputing offers failed; retrying in 5 s");
        if (all) this.dirtyAll = true;
        else for (const id of ids) this.dirty.add(id);
        await sleep(5000);
      }
    }
  }

  /** Recomputes the offers of these devices (null: all), page by page, and stores the notices that changed. */
  private async sweep(ids: string[] | null): Promise<void> {
    const db = this.deps.db;
    // Members the rollouts have noted but not yet written count: a device a running rollout offered stays included when it pauses.
    await this.deps.rollouts.flush();
    let made = 0;
    const started = Date.now();
    for (let after = "", i = 0; this.started; ) {
      let rows: DeviceRow[];
      if (ids === null) {
        rows = await db.selectFrom("devices").selectAll().where("id", ">", after).orderBy("id").limit(PAGE).execute();
        if (rows.length === 0) break;
        after = rows[rows.length - 1]!.id;
      } else {
        const some = ids.slice(i, i + PAGE);
        if (some.length === 0) break;
        i += PAGE;
        rows = await db.selectFrom("devices").selectAll().where("id", "in", some).orderBy("id").execute();
      }
      made += await this.recompute(rows);
      await yieldToIo();
    }
    if (made > 0) {
      this.deps.log.info({ notices: made, scope: ids === null ? "all" : ids.length, ms: Date.now() - started }, "mqtt notices queued");
      this.poke();
    }
  }

  /** One page of devices: their offers now, and a new notice for each whose offer differs from its last one. */
  private async recompute(rows: DeviceRow[]): Promise<number> {
    const d = this.deps;
    const live = rows.filter((r) => r.revoked_at === null);
    if (live.length === 0) return 0;
    const ids = live.map((r) => r.id);
    // The channel is the operator's, never a sighting's: the stored row says whether tags are needed.
    const needTags = live.filter((r) => d.releases.channelUsesTags(r.channel ?? DEFAULT_CHANNEL)).map((r) => r.id);
    const tags = needTags.length > 0 ? await d.devices.tagsOf(needTags) : new Map<string, string[]>();
    const members = await this.memberships(ids);
    const last = new Map(
      (await d.db.selectFrom("mqtt_notices").select(["device_id", "seq", "digest"]).where("device_id", "in", ids).execute()).map((n) => [n.device_id, n]),
    );
    const base = d.baseUrl();
    const at = new Date().toISOString();
    const writes: Database["mqtt_notices"][] = [];
    for (let k = 0; k < live.length; k++) {
      // With the sightings not yet written laid over: the chip and version the device last told.
      const v = d.devices.view(live[k]!);
      // Polls get their turn every YIELD_EVERY devices.
      if (k % YIELD_EVERY === YIELD_EVERY - 1) await yieldToIo();
      const offer = this.offerFor(v, tags.get(v.id) ?? null, members, base);
      const digest = offerDigest(offer, v.key_generation);
      const prev = last.get(v.id);
      if (prev ? prev.digest === digest : offer === null) continue;
      const seq = (prev?.seq ?? 0) + 1;
      const n = buildNotice(
        { topicTemplate: this.opts.topic, compat: this.opts.compat, macKey: d.credentials.deviceMacKey(v.id, v.key_generation) },
        v.id,
        seq,
        offer,
        at,
      );
      writes.push({
        device_id: v.id,
        seq,
        digest,
        topic: n.topic,
        payload: n.payload,
        compat_topic: n.compatTopic,
        compat_payload: n.compatPayload,
        pending: 1,
        updated_at: at,
      });
    }
    if (writes.length === 0) return 0;
    // One statement per page: the newest notice of each device, and pending until the broker acknowledges it.
    await d.db
      .insertInto("mqtt_notices")
      .values(writes)
      .onConflict((oc) =>
        oc.column("device_id").doUpdateSet((eb) => ({
          seq: eb.ref("excluded.seq"),
          digest: eb.ref("excluded.digest"),
          topic: eb.ref("excluded.topic"),
          payload: eb.ref("excluded.payload"),
          compat_topic: eb.ref("excluded.compat_topic"),
          compat_payload: eb.ref("excluded.compat_payload"),
          pending: eb.ref("excluded.pending"),
          updated_at: eb.ref("excluded.updated_at"),
        })),
      )
      .execute();
    return writes.length;
  }

  /** The devices' statuses in the rollouts that are not completed: device id -> rollout id -> status. */
  private async memberships(ids: string[]): Promise<Map<string, Map<string, MemberStatus>>> {
    const open = this.deps.rollouts.list().filter((r) => r.state !== "completed").map((r) => r.id);
    const out = new Map<string, Map<string, MemberStatus>>();
    if (open.length === 0) return out;
    const rows = await this.deps.db
      .selectFrom("rollout_devices")
      .select(["rollout_id", "device_id", "status"])
      .where("rollout_id", "in", open)
      .where("device_id", "in", ids)
      .execute();
    for (const r of rows) {
      let m = out.get(r.device_id);
      if (!m) out.set(r.device_id, (m = new Map<string, MemberStatus>()));
      m.set(r.rollout_id, r.status as MemberStatus);
    }
    return out;
  }

  /** What the device would be offered if it polled now with what it last told the server (offer.ts's rule). */
  private offerFor(
    v: ReturnType<NotifierDeps["devices"]["view"]>,
    tags: string[] | null,
    members: Map<string, Map<string, MemberStatus>>,
    base: string,
  ): NoticeOffer | null {
    const d = this.deps;
    let image: CatalogImage | undefined;
    let release: string | null = null;
    if (d.releases.size === 0) {
      image = d.catalog.latest(v.chip);
    } else {
      const facts: DeviceFacts = {
        id: v.id,
        chip: v.chip,
        chipRev: v.chip_rev,
        version: v.version,
        channel: v.channel ?? DEFAULT_CHANNEL,
        group: v.group_name,
        pinned: v.pinned_release,
        tags,
      };
      const mine = members.get(v.id);
      const membership = (rolloutId: string) => mine?.get(rolloutId);
      const a = assign(facts, {
        channel: (c) => d.releases.channel(c),
        get: (n) => d.releases.get(n),
        includes: (r, dev) => d.rollouts.includes(r, dev.id, dev.version, membership),
      });
      if (a) {
        image = d.catalog.image(a.release.imageSha256);
        release = a.release.name;
      }
    }
    if (!image) return null;
    return { release, version: image.version, sha256: image.sha256, size: image.size, url: `${base}/firmware/sha256/${image.sha256}.bin` };
  }

  // ---- the sender ---------------------------------------------------------------------------------------------

  private poke(): void {
    const w = this.wakeSender;
    this.wakeSender = null;
    w?.();
  }

  /** Waits for poke() or at most `ms`. */
  private async idle(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wakeSender = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private async sendLoop(): Promise<void> {
    let after = "";
    /** Whether this pass over the pending notices published any: a pass that did not waits for a change. */
    let published = false;
    while (this.started) {
      if (!this.deps.link.connected || this.inFlight.size >= MAX_IN_FLIGHT) {
        await this.idle(200);
        continue;
      }
      let rows: PendingRow[];
      try {
        rows = await this.deps.db
          .selectFrom("mqtt_notices")
          .select(["device_id", "seq", "topic", "payload", "compat_topic", "compat_payload"])
          .where("pending", "=", 1)
          .where("device_id", ">", after)
          .orderBy("device_id")
          .limit(PAGE)
          .execute();
      } catch (err) {
        this.deps.log.error({ err }, "mqtt notices: reading pending notices failed; retrying in 5 s");
        await this.idle(5000);
        continue;
      }
      if (rows.length === 0) {
        if (!published) await this.idle(1000);
        after = "";
        published = false;
        continue;
      }
      after = rows[rows.length - 1]!.device_id;
      let sent = 0;
      for (const row of rows) {
        if (!this.started || !this.deps.link.connected) break;
        if (this.inFlight.get(row.device_id) === row.seq) continue;
        while (this.inFlight.size >= MAX_IN_FLIGHT && this.started) await this.idle(50);
        await this.pace(row.compat_topic ? 2 : 1);
        if (!this.started || !this.deps.link.connected) break;
        this.publish(row);
        published = true;
        if (++sent % YIELD_EVERY === 0) await yieldToIo();
      }
    }
  }

  /** Waits until `n` more messages fit the rate. */
  private async pace(n: number): Promise<void> {
    const now = Date.now();
    const interval = 1000 / this.opts.rate;
    // Idle time earns no credit beyond one message: a burst after a quiet spell is still paced.
    if (this.paceStart + this.paceSent * interval < now - interval) {
      this.paceStart = now;
      this.paceSent = 0;
    }
    this.paceSent += n;
    const due = this.paceStart + (this.paceSent - n) * interval;
    if (due > now) await sleep(due - now);
  }

  private publish(row: PendingRow): void {
    const link = this.deps.link;
    this.inFlight.set(row.device_id, row.seq);
    const sends = [link.publish(row.topic, row.payload)];
    if (row.compat_topic && row.compat_payload !== null) sends.push(link.publish(row.compat_topic, row.compat_payload));
    Promise.all(sends).then(
      () => {
        this.acked.push({ deviceId: row.device_id, seq: row.seq });
        if (this.acked.length === 1) this.ackWrite = this.ackWrite.then(() => sleep(50)).then(() => this.writeAcks());
      },
      () => {
        if (this.inFlight.get(row.device_id) === row.seq) this.inFlight.delete(row.device_id);
      },
    );
  }

  /** Marks acknowledged notices delivered (unless a newer one for the device was made meanwhile). */
  private async writeAcks(): Promise<void> {
    const batch = this.acked;
    this.acked = [];
    if (batch.length === 0) return;
    try {
      await this.deps.db.transaction().execute(async (trx) => {
        for (const a of batch) {
          await trx.updateTable("mqtt_notices").set({ pending: 0 }).where("device_id", "=", a.deviceId).where("seq", "=", a.seq).execute();
        }
      });
    } catch (err) {
      // Still pending in the database: published again at the next (re)connection; harmless, the seq is the same.
      this.deps.log.warn({ err, notices: batch.length }, "mqtt notices: recording acknowledgements failed");
    }
    for (const a of batch) if (this.inFlight.get(a.deviceId) === a.seq) this.inFlight.delete(a.deviceId);
  }
}
