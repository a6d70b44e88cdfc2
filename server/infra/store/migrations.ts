// Versioned schema migrations, applied in name order at start. Never edit a released migration: add one.
import { sql, type Expression, type Kysely, type Migration, type MigrationProvider } from "kysely";

type Dialect = "sqlite" | "postgres";
/** Migrations see the database as it was when they were written, not as schema.ts describes it today. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Kysely's documented type for migrations
type AnyDb = Kysely<any>;

function migrations(dialect: Dialect): Record<string, Migration> {
  const serial = dialect === "postgres" ? "serial" : "integer";
  // Text compares byte by byte on both (SQLite's BINARY, PostgreSQL's "C"): ids, names and tags sort, page and
  // match the same whatever the PostgreSQL database's own collation.
  const text: "text" | Expression<unknown> = dialect === "postgres" ? sql`text collate "C"` : "text";
  return {
    "0001_core": {
      async up(db: AnyDb) {
        await db.schema
          .createTable("images")
          .addColumn("sha256", text, (c) => c.primaryKey())
          .addColumn("size", "integer", (c) => c.notNull())
          .addColumn("md5", text, (c) => c.notNull())
          .addColumn("version", text, (c) => c.notNull())
          .addColumn("project", text, (c) => c.notNull())
          .addColumn("chip", text, (c) => c.notNull())
          .addColumn("chip_id", "integer", (c) => c.notNull())
          .addColumn("min_chip_rev", "integer", (c) => c.notNull())
          .addColumn("max_chip_rev", "integer")
          .addColumn("secure_version", "integer", (c) => c.notNull())
          .addColumn("idf_version", text, (c) => c.notNull())
          .addColumn("app_elf_sha256", text, (c) => c.notNull())
          .addColumn("build_date", text, (c) => c.notNull())
          .addColumn("build_time", text, (c) => c.notNull())
          .addColumn("trailing_bytes", "integer", (c) => c.notNull())
          .addColumn("first_ingested_at", text, (c) => c.notNull())
          .addColumn("last_ingested_at", text, (c) => c.notNull())
          .execute();

        await db.schema
          .createTable("firmware_files")
          .addColumn("name", text, (c) => c.primaryKey())
          .addColumn("status", text, (c) => c.notNull())
          .addColumn("sha256", text)
          .addColumn("size", "integer", (c) => c.notNull())
          .addColumn("mtime_ms", "bigint", (c) => c.notNull())
          .addColumn("reason_code", text)
          .addColumn("reason", text)
          .addColumn("source", text, (c) => c.notNull())
          .addColumn("updated_at", text, (c) => c.notNull())
          .execute();

        await db.schema
          .createTable("devices")
          .addColumn("id", text, (c) => c.primaryKey())
          .addColumn("chip", text)
          .addColumn("version", text)
          .addColumn("state", text)
          .addColumn("state_detail", text)
          .addColumn("target_version", text)
          .addColumn("progress_bytes", "integer")
          .addColumn("progress_total", "integer")
          .addColumn("first_seen_at", text)
          .addColumn("last_seen_at", text)
          .addColumn("last_report_at", text)
          .addColumn("last_ip", text)
          .addColumn("provisioned_at", text)
          .addColumn("key_generation", "integer", (c) => c.notNull().defaultTo(0))
          .addColumn("revoked_at", text)
          .addColumn("created_at", text, (c) => c.notNull())
          .execute();

        await db.schema
          .createTable("reports")
          .addColumn("id", serial, (c) => (dialect === "sqlite" ? c.primaryKey().autoIncrement() : c.primaryKey()))
          .addColumn("device_id", text, (c) => c.notNull())
          .addColumn("report_id", text)
          .addColumn("status", text, (c) => c.notNull())
          .addColumn("version", text)
          .addColumn("target_version", text)
          .addColumn("error", text)
          .addColumn("reason", text)
          .addColumn("bytes", "integer")
          .addColumn("total", "integer")
          .addColumn("sha256", text)
          .addColumn("remote_ip", text)
          .addColumn("received_at", text, (c) => c.notNull())
          .execute();
        await db.schema
          .createIndex("reports_device_report_id")
          .on("reports")
          .columns(["device_id", "report_id"])
          .unique()
          .execute();
        await db.schema.createIndex("reports_device_id").on("reports").columns(["device_id", "id"]).execute();

        await db.schema
          .createTable("api_keys")
          .addColumn("id", text, (c) => c.primaryKey())
          .addColumn("label", text, (c) => c.notNull())
          .addColumn("key_hash", text, (c) => c.notNull().unique())
          .addColumn("created_at", text, (c) => c.notNull())
          .addColumn("revoked_at", text)
          .execute();

        await db.schema
          .createTable("operator_tokens")
          .addColumn("jti", text, (c) => c.primaryKey())
          .addColumn("subject", text, (c) => c.notNull())
          .addColumn("role", text, (c) => c.notNull())
          .addColumn("created_at", text, (c) => c.notNull())
          .addColumn("expires_at", text)
          .addColumn("revoked_at", text)
          .execute();
      },
    },
    "0002_releases_rollouts": {
      async up(db: AnyDb) {
        // What targeting and hardware checks need to know about a device (one column per statement: SQLite).
        await db.schema.alterTable("devices").addColumn("chip_rev", "integer").execute();
        await db.schema.alterTable("devices").addColumn("channel", text, (c) => c.notNull().defaultTo("stable")).execute();
        await db.schema.alterTable("devices").addColumn("group_name", text).execute();
        await db.schema.alterTable("devices").addColumn("pinned_release", text).execute();
        await db.schema.createIndex("devices_group_name").on("devices").columns(["group_name", "id"]).execute();
        await db.schema.createIndex("devices_channel").on("devices").columns(["channel", "id"]).execute();

        await db.schema
          .createTable("device_tags")
          .addColumn("device_id", text, (c) => c.notNull())
          .addColumn("tag", text, (c) => c.notNull())
          .addPrimaryKeyConstraint("device_tags_pk", ["device_id", "tag"])
          .execute();
        await db.schema.createIndex("device_tags_tag").on("device_tags").columns(["tag", "device_id"]).execute();

        await db.schema
          .createTable("releases")
          .addColumn("id", serial, (c) => (dialect === "sqlite" ? c.primaryKey().autoIncrement() : c.primaryKey()))
          .addColumn("name", text, (c) => c.notNull().unique())
          .addColumn("channel", text, (c) => c.notNull())
          .addColumn("image_sha256", text, (c) => c.notNull())
          .addColumn("version", text, (c) => c.notNull())
          .addColumn("chip", text, (c) => c.notNull())
          .addColumn("notes", text, (c) => c.notNull())
          .addColumn("target_groups", text, (c) => c.notNull()) // JSON arrays
          .addColumn("target_tags", text, (c) => c.notNull())
          .addColumn("target_devices", text, (c) => c.notNull())
          .addColumn("min_version", text)
          .addColumn("via_release", text)
          .addColumn("allow_downgrade", "integer", (c) => c.notNull().defaultTo(0))
          .addColumn("created_at", text, (c) => c.notNull())
          .addColumn("created_by", text, (c) => c.notNull())
          .execute();

        await db.schema
          .createTable("rollouts")
          .addColumn("id", text, (c) => c.primaryKey())
          .addColumn("release_name", text, (c) => c.notNull().unique())
          .addColumn("state", text, (c) => c.notNull())
          .addColumn("stage", "integer", (c) => c.notNull())
          .addColumn("policy", text, (c) => c.notNull()) // JSON
          .addColumn("window_started_at", text, (c) => c.notNull())
          .addColumn("state_reason", text)
          .addColumn("created_at", text, (c) => c.notNull())
          .addColumn("created_by", text, (c) => c.notNull())
          .addColumn("updated_at", text, (c) => c.notNull())
          .execute();

        await db.schema
          .createTable("rollout_devices")
          .addColumn("rollout_id", text, (c) => c.notNull())
          .addColumn("device_id", text, (c) => c.notNull())
          .addColumn("stage", "integer", (c) => c.notNull())
          .addColumn("status", text, (c) => c.notNull())
          .addColumn("joined_at", text, (c) => c.notNull())
          .addColumn("updated_at", text, (c) => c.notNull())
          .addColumn("finished_at", text)
          .addPrimaryKeyConstraint("rollout_devices_pk", ["rollout_id", "device_id"])
          .execute();

        await db.schema
          .createTable("audit_log")
          .addColumn("id", serial, (c) => (dialect === "sqlite" ? c.primaryKey().autoIncrement() : c.primaryKey()))
          .addColumn("at", text, (c) => c.notNull())
          .addColumn("actor", text, (c) => c.notNull())
          .addColumn("role", text)
          .addColumn("token_id", text)
          .addColumn("source", text, (c) => c.notNull())
          .addColumn("ip", text)
          .addColumn("request_id", text)
          .addColumn("action", text, (c) => c.notNull())
          .addColumn("target", text)
          .addColumn("outcome", text, (c) => c.notNull())
          .addColumn("details", text, (c) => c.notNull()) // JSON
          .execute();
        await db.schema.createIndex("audit_log_action").on("audit_log").columns(["action", "id"]).execute();
      },
    },
    // What clients we do not control tell us about themselves (Arduino HTTPUpdate's x-ESP32-* headers).
    "0003_client_info": {
      async up(db: AnyDb) {
        // One column per statement: SQLite's ALTER TABLE adds a single column at a time.
        const columns: [string, typeof text | "integer"][] = [
          ["client", text],
          ["sketch_size", "integer"],
          ["free_space", "integer"],
          ["flash_size", "integer"],
          ["running_sha256", text],
          ["running_md5", text],
          ["sdk_version", text],
        ];
        for (const [name, type] of columns) await db.schema.alterTable("devices").addColumn(name, type).execute();
      },
    },
    // Which key signed a release's image (Secure Boot v2 block): its scheme, its eFuse key digest, and whether the
    // server trusted that key (OTA_SIGNING_KEYS) when the release was made. Null for releases of unsigned images.
    "0004_release_signer": {
      async up(db: AnyDb) {
        await db.schema.alterTable("releases").addColumn("signer_scheme", text).execute();
        await db.schema.alterTable("releases").addColumn("signer_key_digest", text).execute();
        await db.schema.alterTable("releases").addColumn("signer_trusted", "integer").execute();
      },
    },
    // A million devices: rollout counts kept as members move (no GROUP BY over every member), and an index for
    // every operator filter, so no operator request walks the whole fleet.
    "0005_rollout_counts_and_filters": {
      async up(db: AnyDb) {
        // Members per (rollout, stage, status), and per (rollout, status) for the current window (stage -1:
        // members that finished since the window started), written in the transaction that moves the members.
        await db.schema
          .createTable("rollout_counts")
          .addColumn("rollout_id", "text", (c) => c.notNull())
          .addColumn("stage", "integer", (c) => c.notNull())
          .addColumn("status", "text", (c) => c.notNull())
          .addColumn("n", "integer", (c) => c.notNull())
          .addPrimaryKeyConstraint("rollout_counts_pk", ["rollout_id", "stage", "status"])
          .execute();
        await db
          .insertInto("rollout_counts")
          .columns(["rollout_id", "stage", "status", "n"])
          .expression(
            db
              .selectFrom("rollout_devices")
              .select((eb) => ["rollout_id", "stage", "status", eb.fn.countAll().as("n")])
              .groupBy(["rollout_id", "stage", "status"]),
          )
          .execute();
        // ISO-8601 texts in UTC compare as the times they say.
        await db
          .insertInto("rollout_counts")
          .columns(["rollout_id", "stage", "status", "n"])
          .expression(
            db
              .selectFrom("rollout_devices as d")
              .innerJoin("rollouts as r", "r.id", "d.rollout_id")
              .select((eb) => ["d.rollout_id", sql<number>`-1`.as("stage"), "d.status", eb.fn.countAll().as("n")])
              .where("d.status", "in", ["succeeded", "failed", "rolled_back"])
              .whereRef("d.finished_at", ">=", "r.window_started_at")
              .groupBy(["d.rollout_id", "d.status"]),
          )
          .execute();

        // Operator filters: each an index whose order after the filtered column is the list's (by id).
        await db.schema.createIndex("devices_version").on("devices").columns(["version", "id"]).execute();
        await db.schema.createIndex("devices_state").on("devices").columns(["state", "id"]).execute();
        await db.schema.createIndex("devices_last_seen").on("devices").columns(["last_seen_at"]).execute();
        await db.schema.createIndex("audit_log_target").on("audit_log").columns(["target", "id"]).execute();
        await db.schema.createIndex("audit_log_actor").on("audit_log").columns(["actor", "id"]).execute();
      },
    },
    // Several server processes on one database: a rollout's version makes each state change a compare-and-set
    // (a decision taken by two processes at once is written once); cache_versions says which cached tables changed
    // (with NOTIFY, so other processes reload them); nonces keeps the replay check of every process in one place.
    "0006_replicas": {
      async up(db: AnyDb) {
        await db.schema.alterTable("rollouts").addColumn("version", "integer", (c) => c.notNull().defaultTo(0)).execute();
        await db.schema
          .createTable("cache_versions")
          .addColumn("topic", text, (c) => c.primaryKey())
          .addColumn("version", "bigint", (c) => c.notNull())
          .execute();
        await db
          .insertInto("cache_versions")
          .values(["releases", "rollouts", "catalog"].map((topic) => ({ topic, version: 0 })))
          .execute();
        await db.schema
          .createTable("nonces")
          .addColumn("device_id", text, (c) => c.notNull())
          .addColumn("nonce", text, (c) => c.notNull())
          .addColumn("expires_at", "bigint", (c) => c.notNull())
          .addPrimaryKeyConstraint("nonces_pk", ["device_id", "nonce"])
          .execute();
        await db.schema.createIndex("nonces_expires_at").on("nonces").columns(["expires_at"]).execute();
        // Written on every poll and worth nothing after ten minutes: no write-ahead log for it.
        if (dialect === "postgres") await sql`ALTER TABLE nonces SET UNLOGGED`.execute(db);
      },
    },
    // MQTT update notices: per device, the last notice made (its sequence number only grows, across restarts),
    // the digest of the offer it names (a notice is made again only when that changes), the retained messages
    // as published, and whether the broker has yet to acknowledge them (pending: published again on reconnect).
    "0007_mqtt_notices": {
      async up(db: AnyDb) {
        await db.schema
          .createTable("mqtt_notices")
          .addColumn("device_id", text, (c) => c.primaryKey())
          .addColumn("seq", "integer", (c) => c.notNull())
          .addColumn("digest", text, (c) => c.notNull())
          .addColumn("topic", text, (c) => c.notNull())
          .addColumn("payload", text, (c) => c.notNull())
          .addColumn("compat_topic", text)
          .addColumn("compat_payload", text)
          .addColumn("pending", "integer", (c) => c.notNull())
          .addColumn("updated_at", text, (c) => c.notNull())
          .execute();
        await db.schema.createIndex("mqtt_notices_pending").on("mqtt_notices").columns(["pending", "device_id"]).execute();
      },
    },
  };
}

export class StaticMigrations implements MigrationProvider {
  constructor(private readonly dialect: Dialect) {}
  getMigrations(): Promise<Record<string, Migration>> {
    return Promise.resolve(migrations(this.dialect));
  }
}
