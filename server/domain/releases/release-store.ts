// Releases: an ingested image promoted to a channel, with notes, the devices it targets, its upgrade path
// and whether it may replace a newer version. Immutable once created (a changed plan is a new release), so
// what a rollout promised never changes under it. All of them are held in memory for the poll path.
import { EventEmitter } from "node:events";
import type { Kysely } from "kysely";
import type { SignatureScheme } from "../../esp";
import type { CatalogImage } from "../catalog/catalog";
import type { Database, ReleaseRow } from "../../infra/store/schema";
import type { NoteChange } from "../../infra/replicas/change-feed";

export interface ReleaseTargets {
  groups: string[];
  tags: string[];
  devices: string[];
}

export interface Release {
  id: number;
  name: string;
  channel: string;
  imageSha256: string;
  version: string;
  chip: string;
  minChipRev: number;
  maxChipRev: number | null;
  notes: string;
  targets: ReleaseTargets;
  /** Devices must run at least this version to get the release directly ... */
  minVersion: string | null;
  /** ... and the others get this release first (a mandatory intermediate step). */
  via: string | null;
  allowDowngrade: boolean;
  createdAt: string;
  createdBy: string;
  /** Which key signed the image, as recorded when the release was made (null: an unsigned image). */
  signer: ReleaseSigner | null;
}

export interface ReleaseSigner {
  scheme: SignatureScheme;
  /** eFuse digest (hex) of the public key. */
  keyDigest: string;
  /** The key was in OTA_SIGNING_KEYS (false: the server did not check signatures then; the block held under its own key). */
  trusted: boolean;
}

/** The signer a release of this image records: the trusted key that admitted it, else its first signature that holds. */
function signerOf(image: CatalogImage): ReleaseSigner | null {
  if (image.signedBy) return { ...image.signedBy, trusted: true };
  const first = image.signatures[0];
  return first ? { ...first, trusted: false } : null;
}

export interface NewRelease {
  name: string;
  channel: string;
  image: CatalogImage;
  notes: string;
  targets: ReleaseTargets;
  minVersion: string | null;
  via: string | null;
  allowDowngrade: boolean;
  createdBy: string;
}

/** A release with its targeting compiled for the poll path. */
export interface CompiledRelease extends Release {
  everyone: boolean;
  groupSet: ReadonlySet<string>;
  tagSet: ReadonlySet<string>;
  deviceSet: ReadonlySet<string>;
}

export function compileRelease(r: Release): CompiledRelease {
  const t = r.targets;
  return {
    ...r,
    everyone: t.groups.length === 0 && t.tags.length === 0 && t.devices.length === 0,
    groupSet: new Set(t.groups),
    tagSet: new Set(t.tags),
    deviceSet: new Set(t.devices),
  };
}

function fromRow(row: ReleaseRow, image: { minChipRev: number; maxChipRev: number | null } | undefined): Release {
  return {
    id: row.id,
    name: row.name,
    channel: row.channel,
    imageSha256: row.image_sha256,
    version: row.version,
    chip: row.chip,
    minChipRev: image?.minChipRev ?? 0,
    maxChipRev: image?.maxChipRev ?? null,
    notes: row.notes,
    targets: {
      groups: JSON.parse(row.target_groups) as string[],
      tags: JSON.parse(row.target_tags) as string[],
      devices: JSON.parse(row.target_devices) as string[],
    },
    minVersion: row.min_version,
    via: row.via_release,
    allowDowngrade: row.allow_downgrade === 1,
    createdAt: row.created_at,
    createdBy: row.created_by,
    signer:
      row.signer_scheme && row.signer_key_digest
        ? { scheme: row.signer_scheme as SignatureScheme, keyDigest: row.signer_key_digest, trusted: row.signer_trusted === 1 }
        : null,
  };
}

export class ReleaseStore extends EventEmitter {
  private readonly byName = new Map<string, CompiledRelease>();
  /** Per channel, newest first. */
  private byChannel = new Map<string, CompiledRelease[]>();
  private tagTargeting = new Set<string>();

  constructor(
    private readonly db: Kysely<Database>,
    private readonly imageFacts: (sha256: string) => { minChipRev: number; maxChipRev: number | null } | undefined,
    /** Tells other server processes that a release was made (nothing to tell with one process). */
    private readonly noteChange: NoteChange = () => Promise.resolve(),
  ) {
    super();
  }

  async load(): Promise<void> {
    const rows = await this.db.selectFrom("releases").selectAll().orderBy("id").execute();
    for (const row of rows) this.byName.set(row.name, compileRelease(fromRow(row, this.imageFacts(row.image_sha256))));
    this.reindex();
  }

  /**
   * Takes the releases other processes made (releases never change once made, so only new ones). All rows are
   * read: ids are handed out before their transactions commit, so a smaller id may commit after a larger one.
   */
  async reload(): Promise<void> {
    const rows = await this.db.selectFrom("releases").selectAll().orderBy("id").execute();
    let added = 0;
    for (const row of rows) {
      if (this.byName.has(row.name)) continue;
      this.byName.set(row.name, compileRelease(fromRow(row, this.imageFacts(row.image_sha256))));
      added++;
    }
    if (added === 0) return;
    this.reindex();
    this.emit("changed");
  }

  private reindex(): void {
    const channels = new Map<string, CompiledRelease[]>();
    const tags = new Set<string>();
    for (const r of this.byName.values()) {
      const list = channels.get(r.channel) ?? [];
      list.push(r);
      channels.set(r.channel, list);
      if (r.tagSet.size > 0) tags.add(r.channel);
    }
    for (const list of channels.values()) list.sort((a, b) => b.id - a.id);
    this.byChannel = channels;
    this.tagTargeting = tags;
  }

  get size(): number {
    return this.byName.size;
  }

  get(name: string): CompiledRelease | undefined {
    return this.byName.get(name);
  }

  /** Newest first. */
  channel(channel: string): readonly CompiledRelease[] {
    return this.byChannel.get(channel) ?? [];
  }

  /** Whether any release on this channel targets tags (only then does an offer need the device's tags). */
  channelUsesTags(channel: string): boolean {
    return this.tagTargeting.has(channel);
  }

  list(opts: { channel?: string | undefined } = {}): CompiledRelease[] {
    const all = opts.channel ? [...this.channel(opts.channel)] : [...this.byName.values()].sort((a, b) => b.id - a.id);
    return all;
  }

  /** Stores a new release; the caller has validated it. Throws on a duplicate name (unique index). */
  async create(n: NewRelease): Promise<CompiledRelease> {
    const at = new Date().toISOString();
    const signer = signerOf(n.image);
    const inserted = await this.db.transaction().execute(async (trx) => {
      const row = await trx
        .insertInto("releases")
        .values({
          name: n.name,
          channel: n.channel,
          image_sha256: n.image.sha256,
          version: n.image.version,
          chip: n.image.chip,
          notes: n.notes,
          target_groups: JSON.stringify(n.targets.groups),
          target_tags: JSON.stringify(n.targets.tags),
          target_devices: JSON.stringify(n.targets.devices),
          min_version: n.minVersion,
          via_release: n.via,
          allow_downgrade: n.allowDowngrade ? 1 : 0,
          created_at: at,
          created_by: n.createdBy,
          signer_scheme: signer?.scheme ?? null,
          signer_key_digest: signer?.keyDigest ?? null,
          signer_trusted: signer ? (signer.trusted ? 1 : 0) : null,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      await this.noteChange(trx, "releases");
      return row;
    });
    const release = compileRelease(fromRow(inserted, n.image));
    this.byName.set(release.name, release);
    this.reindex();
    this.emit("changed");
    return release;
  }
}
