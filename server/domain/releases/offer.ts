// Which image a device is offered: the one place that decides, for every endpoint that offers firmware.
//
// Until the first release exists the server offers the most recently ingested valid image for the device's
// chip (any chip when unknown): drop a .bin in the folder and devices get it. From the first release on, a
// device gets only what a release assigns it (assign.ts): targeting, hardware compatibility, the release's
// rollout stage, its upgrade path and pins. The poll path reads memory plus a few keyed lookups (the device's
// row, its tags when some release on its channel targets tags, and its membership in a rollout when the rule
// needs it). The device API's endpoints and
// `ota export` (server/export/) both ask here. When nothing is offered, the manifest also says why
// (chooseOrExplain), from the same reads: no_firmware, or waiting_for_rollout_stage when a release is for the
// device but its running or paused rollout has not reached it.
import type { Logger } from "pino";
import type { Catalog, CatalogImage } from "../catalog/catalog";
import type { DeviceRegistry } from "../devices/registry";
import type { Membership, Rollout, RolloutManager } from "../rollouts/rollout-manager";
import type { DeviceRow } from "../../infra/store/schema";
import type { MaybePromise } from "../../infra/maybe-promise";
import { assign, awaitedRelease, explainAssignment, type AssignDeps, type DeviceFacts, type Verdict } from "./assign";
import type { ReleaseStore } from "./release-store";

const DEFAULT_CHANNEL = "stable";

/** What the decision reads: the server's context has all of it. */
export interface OfferServices {
  catalog: Catalog;
  releases: ReleaseStore;
  rollouts: RolloutManager;
  devices: DeviceRegistry;
  log: Logger;
}

export interface Asker {
  deviceId: string | null;
  chip: string | null;
  version: string | null;
  /** Full chip revision (major * 100 + minor), when the device says it. */
  chipRev?: number | null | undefined;
  /** The device's registry row when the caller has just read it (null: not registered); read here otherwise. */
  row?: DeviceRow | null | undefined;
}

/** An image as offered to one device: with the release it comes from, which decides allow_downgrade. */
export interface Offer extends CatalogImage {
  release: string | null;
  allowDowngrade: boolean;
}

/**
 * One Offer object per (image, release, allow_downgrade), reused for every poll: the manifest handler
 * (server/api/device/manifest.ts) caches each offer's serialised parts by object identity, so a fresh object
 * per poll would rebuild them every time.
 */
const offers = new WeakMap<CatalogImage, Map<string, Offer>>();

function offerOf(image: CatalogImage, release: string | null, allowDowngrade: boolean): Offer {
  let byRelease = offers.get(image);
  if (!byRelease) offers.set(image, (byRelease = new Map<string, Offer>()));
  const key = `${allowDowngrade ? 1 : 0}${release ?? ""}`;
  let offer = byRelease.get(key);
  if (!offer) byRelease.set(key, (offer = Object.freeze({ ...image, release, allowDowngrade })));
  return offer;
}

/**
 * The offer for a device, or undefined. Synchronous when the caller has read the device's row and its channel
 * targets no tags (every poll of our agent): a promise only when a lookup is needed.
 */
export function chooseImage(ctx: OfferServices, asker: Asker): MaybePromise<Offer | undefined> {
  return decide(
    ctx,
    asker,
    () => folderOffer(ctx, asker),
    (f, m) => offerFor(ctx, f, m),
  );
}

/**
 * For the manifest: the offer, or only when there is none, why (NoOffer), from the same facts and membership, so a
 * poll that gets an offer pays nothing for the reason and one that gets none reads nothing twice.
 */
export function chooseOrExplain(ctx: OfferServices, asker: Asker): MaybePromise<Offer | NoOffer> {
  return decide<Offer | NoOffer>(
    ctx,
    asker,
    () => folderOffer(ctx, asker) ?? plainNoOffer(ctx, asker),
    (f, m) => offerFor(ctx, f, m) ?? noOfferFor(ctx, asker, f, m),
  );
}

/** Whether chooseOrExplain found an offer. */
export const isOffer = (x: Offer | NoOffer): x is Offer => "sha256" in x;

/** Folder mode (no release yet): the newest image for the chip. */
function folderOffer(ctx: Pick<OfferServices, "catalog">, asker: Asker): Offer | undefined {
  const image = ctx.catalog.latest(asker.chip);
  return image && offerOf(image, null, false);
}

/** `folder` before the first release; else `withFacts` on the device's facts and rollout membership. */
function decide<T>(ctx: OfferServices, asker: Asker, folder: () => T, withFacts: (f: DeviceFacts, m: Membership) => T): MaybePromise<T> {
  if (ctx.releases.size === 0) return folder();
  const facts = deviceFacts(ctx, asker);
  const membership = ctx.rollouts.membership(asker.deviceId);
  if (facts instanceof Promise || membership instanceof Promise) {
    return Promise.all([facts, membership]).then(([f, m]) => withFacts(f, m));
  }
  return withFacts(facts, membership);
}

function assignDeps(ctx: Pick<OfferServices, "releases" | "rollouts">, membership: Membership): AssignDeps {
  return {
    channel: (c) => ctx.releases.channel(c),
    get: (n) => ctx.releases.get(n),
    includes: (r, d) => ctx.rollouts.includes(r, d.id, d.version, membership),
  };
}

/** `note`: record the offer in the release's rollout (a poll does; the operator's look at a device does not). */
function offerFor(ctx: OfferServices, facts: DeviceFacts, membership: Membership, note = true): Offer | undefined {
  const a = assign(facts, assignDeps(ctx, membership));
  if (!a) return undefined;
  const image = ctx.catalog.image(a.release.imageSha256);
  if (!image) {
    ctx.log.error({ release: a.release.name, sha256: a.release.imageSha256 }, "a release's image is missing from the store; ingest its file again");
    return undefined;
  }
  if (note && !a.pinned && facts.id) ctx.rollouts.noteOffer(a.target, facts.id, membership);
  return offerOf(image, a.release.name, a.release.allowDowngrade);
}

/** What the registry and the request together say about the asking device. */
function deviceFacts(ctx: Pick<OfferServices, "devices" | "releases">, asker: Asker): MaybePromise<DeviceFacts> {
  if (asker.deviceId && asker.row === undefined) {
    const id = asker.deviceId;
    return ctx.devices.get(id).then((row) => deviceFacts(ctx, { ...asker, row: row ?? null }));
  }
  const known = asker.row ? ctx.devices.view(asker.row) : undefined;
  const channel = known?.channel ?? DEFAULT_CHANNEL;
  const facts: DeviceFacts = {
    id: asker.deviceId,
    chip: asker.chip ?? known?.chip ?? null,
    chipRev: asker.chipRev ?? known?.chip_rev ?? null,
    version: asker.version ?? known?.version ?? null,
    channel,
    group: known?.group_name ?? null,
    pinned: known?.pinned_release ?? null,
    tags: null,
  };
  if (!asker.deviceId || !ctx.releases.channelUsesTags(channel)) return facts;
  return ctx.devices.tags(asker.deviceId).then((tags) => ({ ...facts, tags }));
}

/** Why nothing was offered, in words that say what to do. */
export function noOfferMessage(ctx: Pick<OfferServices, "releases">, asker: Asker): string {
  if (ctx.releases.size === 0) {
    return asker.chip
      ? `no firmware for ${asker.chip} yet: copy an ESP-IDF app .bin into the firmware folder or upload one`
      : "no firmware yet: copy an ESP-IDF app .bin into the firmware folder or upload one";
  }
  if (!asker.chip) {
    return "no release for this device: its chip is unknown, so hardware compatibility cannot be checked; send X-Device-Chip";
  }
  return "no release is assigned to this device now";
}

/** Why nothing is offered to a device now: a stable code, and words that say what to do. */
export interface NoOffer {
  code: "no_firmware" | "waiting_for_rollout_stage";
  message: string;
  /** waiting_for_rollout_stage: the release whose rollout has not reached the device yet. */
  release: string | null;
}

function plainNoOffer(ctx: Pick<OfferServices, "releases">, asker: Asker): NoOffer {
  return { code: "no_firmware", message: noOfferMessage(ctx, asker), release: null };
}

function noOfferFor(ctx: OfferServices, asker: Asker, facts: DeviceFacts, membership: Membership): NoOffer {
  const release = awaitedRelease(facts, {
    channel: (c) => ctx.releases.channel(c),
    get: (n) => ctx.releases.get(n),
    waiting: (r, d) => d.id !== null && ctx.rollouts.awaiting(r, d.id, d.version, membership) !== undefined,
  });
  const rollout = release && ctx.rollouts.get(release.name);
  if (!release || !rollout) return plainNoOffer(ctx, asker);
  return { code: "waiting_for_rollout_stage", message: waitingMessage(release.name, rollout), release: release.name };
}

function waitingMessage(release: string, r: Rollout): string {
  const percent = r.policy.stages[r.stage]!;
  if (r.state === "paused") {
    return `release ${release} is for this device, but its rollout is paused (at its stage of ${percent} %) before it reached this device: keep polling; the release is offered once the rollout is resumed and a stage includes this device`;
  }
  return `release ${release} is for this device, but its rollout's current stage (${percent} % of the devices it targets) does not include this device yet: keep polling; the release is offered when a later stage includes it`;
}

/** What a device would be told if it polled now, recording nothing: its offer, or why it has none. */
export function offerNow(ctx: OfferServices, asker: Asker): MaybePromise<Offer | NoOffer> {
  return decide<Offer | NoOffer>(
    ctx,
    asker,
    () => folderOffer(ctx, asker) ?? plainNoOffer(ctx, asker),
    (f, m) => offerFor(ctx, f, m, false) ?? noOfferFor(ctx, asker, f, m),
  );
}

export interface OfferExplanation {
  /** "latest": no release exists, the newest image for the chip is offered; "releases": releases decide. */
  mode: "latest" | "releases";
  /** The image the device's next poll would be offered (given the version and chip the server knows), or null. */
  offer: { sha256: string; version: string; release: string | null } | null;
  /** The pin, when the device has one (then it alone is judged). */
  pinned: string | null;
  /** Releases judged, in order, up to the one that wins. */
  candidates: Verdict[];
  /** Why nothing is offered, when nothing is. */
  message: string | null;
}

/**
 * What a registered device would be offered at its next poll and why, from what the server knows of it (its
 * stored chip, revision and version): the same decision as a poll, without the poll's effects (no rollout
 * membership is written).
 */
export async function explainOffer(ctx: OfferServices, row: DeviceRow): Promise<OfferExplanation> {
  const asker: Asker = { deviceId: row.id, chip: null, version: null, row };
  const facts = await deviceFacts(ctx, asker);
  const noOffer = (mode: OfferExplanation["mode"], pinned: string | null, candidates: Verdict[]): OfferExplanation => ({
    mode,
    offer: null,
    pinned,
    candidates,
    message: noOfferMessage(ctx, { ...asker, chip: facts.chip }),
  });
  if (ctx.releases.size === 0) {
    const image = ctx.catalog.latest(facts.chip);
    if (!image) return noOffer("latest", null, []);
    return { mode: "latest", offer: { sha256: image.sha256, version: image.version, release: null }, pinned: null, candidates: [], message: null };
  }
  const membership = await ctx.rollouts.membership(row.id);
  const { pinned, candidates } = explainAssignment(facts, assignDeps(ctx, membership));
  const won = candidates.find((c) => c.refusal === null);
  const release = won?.installs ? ctx.releases.get(won.installs) : undefined;
  const image = release && ctx.catalog.image(release.imageSha256);
  if (!release || !image) return noOffer("releases", pinned, candidates);
  return { mode: "releases", offer: { sha256: image.sha256, version: image.version, release: release.name }, pinned, candidates, message: null };
}
