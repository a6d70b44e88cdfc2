// Builds the whole server from a configuration and starts HTTPS. Used by `npm start` and by the tests.
import { constants as cryptoConstants } from "node:crypto";
import fs from "node:fs";
import { STATUS_CODES } from "node:http";
import https from "node:https";
import type { AddressInfo, DropArgument } from "node:net";
import type tls from "node:tls";
import type { Logger } from "pino";
import { createApp } from "./app";
import { AuditLog } from "./domain/audit/audit-log";
import { Credentials } from "./infra/auth/credentials";
import { ensureFirstStartCredentials } from "./infra/auth/first-start";
import { loadOrCreateMasterSecret } from "./infra/auth/master-secret";
import { BlobStore } from "./domain/catalog/blob-store";
import { Catalog } from "./domain/catalog/catalog";
import { FolderWatcher } from "./domain/catalog/folder-watcher";
import type { Config } from "./infra/config/config";
import type { Context } from "./context";
import { NonceCache, SharedNonces, type Nonces } from "./api/device/nonce-cache";
import { localChangeFeed, PostgresChangeFeed, type ChangeFeed } from "./infra/replicas/change-feed";
import { PostgresLeadership, soleProcess, type Leadership } from "./infra/replicas/leadership";
import { DeviceRegistry } from "./domain/devices/registry";
import type { ErrorCode } from "./api/http/error-codes";
import { parsePartitionsCsv, PartitionTableError, requireOtaLayout, type PartitionTable } from "./esp";
import { createLogger } from "./infra/logging/logger";
import { ThrottledWarning } from "./infra/logging/throttled-warning";
import { ReleaseStore } from "./domain/releases/release-store";
import { RolloutManager } from "./domain/rollouts/rollout-manager";
import { openStore } from "./infra/store/db";
import { ensureCertificates } from "./infra/tls/certificates";
import { signingPolicyInfo } from "./domain/catalog/signing-policy";
import { UpdateNotifier } from "./domain/notify/notifier";
import { MqttLink } from "./infra/mqtt/link";

export interface RunningServer {
  ctx: Context;
  server: https.Server;
  port: number;
  url: string;
  /** The dev-credentials.json written at this start, if this was the first. */
  devCredentialsFile: string | null;
  /** MQTT update notices (OTA_MQTT_URL), started with the server; null when off. */
  notifier: UpdateNotifier | null;
  close(): Promise<void>;
}

const ignore = () => undefined;

function loadPartitions(file: string): PartitionTable {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`OTA_PARTITIONS: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { cause: e });
  }
  try {
    const table = parsePartitionsCsv(text);
    requireOtaLayout(table);
    return table;
  } catch (e) {
    if (e instanceof PartitionTableError) throw new Error(`OTA_PARTITIONS: ${file}: ${e.message}`, { cause: e });
    throw e;
  }
}

/** Opens the data directory and catalog: what the server and the `ota` command share. */
export async function openContextParts(config: Config, log: Logger) {
  const master = await loadOrCreateMasterSecret(config.dataDir);
  const store = await openStore(config.dataDir, log, config.database);
  const credentials = new Credentials(store.db, master.secret);
  const raw = store.sqlite && store.reader ? { writer: store.sqlite, reader: store.reader } : undefined;
  const devices = new DeviceRegistry(store.db, log, 3 * config.pollInterval * 1000, undefined, raw);
  const audit = new AuditLog(store.db);
  return { master, store, credentials, devices, audit };
}

/**
 * Builds the whole server context from the data folder. `serving` starts the firmware-folder watcher and
 * sweeps temp files; the `ota` command opens the same context without either (the running server owns them).
 */
export async function openContext(config: Config, log: Logger, opts: { serving: boolean }) {
  const partitions = loadPartitions(config.partitionsFile);
  const { store, credentials, devices, audit } = await openContextParts(config, log);
  // Other server processes may share a PostgreSQL database: what they change in the tables kept in memory here
  // reaches this one through the feed, and one of them (the leader) indexes the firmware folder. The `ota` command
  // only tells (its changes bump the feed) and never leads.
  const session = store.session;
  const feed: ChangeFeed = session ? new PostgresChangeFeed(store.db, session, log, config.syncIntervalMs) : localChangeFeed();
  const leadership: Leadership = session && opts.serving ? new PostgresLeadership(session, log, config.syncIntervalMs) : soleProcess();
  if (opts.serving) await feed.start();

  const blobs = new BlobStore(config.dataDir);
  const catalog = new Catalog(store.db, blobs, config.blockSize, partitions.maxImageSize, log, config.signingKeys, feed.note);
  // With other processes on the folder, a temp file may be one of theirs being written: only old ones are left-overs.
  await catalog.load({ sweep: opts.serving, sweepOlderThanMs: session ? 60 * 60_000 : 0 });
  const watcher = new FolderWatcher(
    config.firmwareDir,
    catalog,
    { settleMs: config.ingestSettleMs, incompleteGraceMs: config.incompleteGraceMs },
    log,
  );

  const releases = new ReleaseStore(store.db, (sha) => catalog.image(sha), feed.note);
  await releases.load();
  const rollouts = new RolloutManager(store.db, releases, audit, credentials.rolloutBucketKey(), log, { noteChange: feed.note, reader: store.reader });
  await rollouts.load();
  feed.onChange("catalog", () => catalog.reload());
  // A release names an image: the catalog first, so the image it names is known when the release is.
  feed.onChange("releases", async () => {
    await catalog.reload();
    await releases.reload();
  });
  feed.onChange("rollouts", () => rollouts.reload());
  if (opts.serving) await leadership.start((leader) => (leader ? watcher.start() : watcher.stop()));
  // Every recorded report, from whichever endpoint, moves its device along in its rollout, in the same transaction.
  devices.setReportEffect({ write: (trx, reports) => rollouts.applyReports(trx, reports) });
  // Decisions the stored reports called for but a crash kept from being written. Only the server takes them: the
  // `ota` command opens the same data while the server may be running. A decision is written over the rollout's
  // version it was taken on, so processes starting together take each once.
  if (opts.serving) await rollouts.applyPolicies();

  const nonces: Nonces = session ? new SharedNonces(store.db, log) : new NonceCache();
  const ctx: Context = {
    config,
    log,
    store,
    credentials,
    devices,
    blobs,
    catalog,
    watcher,
    partitions,
    nonces,
    audit,
    releases,
    rollouts,
  };
  const close = async () => {
    await leadership.close();
    await feed.close();
    nonces.close();
    await devices.close();
    await rollouts.close();
    await store.close();
  };
  return { ctx, close };
}

export async function startServer(config: Config, opts: { log?: Logger } = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(config.logLevel);
  loadPartitions(config.partitionsFile); // a bad table stops the start before anything is created
  const tls = ensureCertificates(config, log);
  const { ctx, close: closeContext } = await openContext(config, log, { serving: true });
  const devCredentialsFile = await ensureFirstStartCredentials(config.dataDir, ctx.credentials, log, config.firstStartTokenDays);
  const partitions = ctx.partitions;
  const server = https.createServer(
    {
      cert: tls.cert,
      key: tls.key,
      minVersion: "TLSv1.2",
      // The app answers a missing Host itself, with a JSON error like every other refusal (Node's own is bare).
      requireHostHeader: false,
      // Without resumption every connection is a full handshake, as with devices that keep no session.
      ...(config.tlsSessionResumption ? {} : { secureOptions: cryptoConstants.SSL_OP_NO_TICKET }),
      // A client that connects and never finishes its handshake would hold its socket for Node's default 120 s.
      handshakeTimeout: config.handshakeTimeoutMs,
    },
    createApp(ctx),
  );
  // Past the cap, Node closes each new connection as soon as it is accepted (before any TLS) and says so with 'drop'.
  server.maxConnections = config.maxConnections;
  const dropped = new ThrottledWarning(log, "connection dropped: OTA_MAX_CONNECTIONS connections are open", {
    maxConnections: config.maxConnections,
  });
  server.on("drop", (data?: DropArgument) => dropped.note({ remoteAddress: data?.remoteAddress }));
  const handshakeTimeouts = new ThrottledWarning(log, "connection closed: the TLS handshake did not finish within OTA_HANDSHAKE_TIMEOUT_MS", {
    handshakeTimeoutMs: config.handshakeTimeoutMs,
  });
  // Before https's own listener, which hands the error to 'clientError' (below), where the socket is destroyed.
  server.prependListener("tlsClientError", (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    if (err.code === "ERR_TLS_HANDSHAKE_TIMEOUT") handshakeTimeouts.note({ remoteAddress: socket.remoteAddress });
  });
  server.headersTimeout = 15_000;
  server.requestTimeout = 300_000;
  server.keepAliveTimeout = 5_000;
  // Node's HTTP server feeds a TLS connection's bytes to its parser natively; when a client pipelines more than
  // the server has answered and the server pauses reading, bytes still reach the paused parser, which fails with
  // HPE_PAUSED and the connection drops (Node 20). A 'data' listener makes Node feed the parser from the stream
  // instead, where pausing works: pipelined requests are then answered in order, however many arrive at once.
  server.on("secureConnection", (socket: tls.TLSSocket) => socket.on("data", ignore));
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    // Only an HTTP parser's refusal (HPE_...) or timeout gets an HTTP answer. Anything else, above all a TLS
    // handshake that failed or timed out (https passes those here too), closes the socket: an answer written to a
    // socket whose handshake never finished would wait for it forever, and so would the socket.
    const fromHttp = err.code?.startsWith("HPE_") === true || err.code === "ERR_HTTP_REQUEST_TIMEOUT";
    if (!fromHttp || !socket.writable) return socket.destroy();
    const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
    const body = JSON.stringify({
      error: {
        code: (status === 431 ? "headers_too_large" : status === 408 ? "request_timeout" : "malformed_request") satisfies ErrorCode,
        message: status === 431 ? "request headers are too large" : status === 408 ? "the request took too long" : "the request is not valid HTTP",
      },
    });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `https://localhost:${port}`;
  const signing = signingPolicyInfo(config);
  if (signing.checked) {
    log.info({ trustedKeys: config.signingKeys!.map((k) => ({ file: k.name, keyDigest: k.digest.toString("hex") })) }, signing.note);
  } else {
    log.info(signing.note);
  }
  log.info({ url, firmwareDir: config.firmwareDir, dataDir: config.dataDir, maxImageSize: partitions.maxImageSize }, "OTA server listening");

  // Pushed update notices: one publisher per database. Started here: one server process serves a database.
  const mqtt = config.mqtt;
  const notifier = mqtt
    ? new UpdateNotifier(
        {
          db: ctx.store.db,
          catalog: ctx.catalog,
          releases: ctx.releases,
          rollouts: ctx.rollouts,
          devices: ctx.devices,
          credentials: ctx.credentials,
          link: new MqttLink(mqtt, log.child({ component: "mqtt" })),
          log: log.child({ component: "mqtt" }),
          baseUrl: () => config.publicUrl ?? url,
        },
        { topic: mqtt.topic, compat: mqtt.compat, rate: mqtt.rate },
      )
    : null;
  notifier?.start();

  let closing: Promise<void> | null = null;
  return {
    ctx,
    server,
    port,
    url,
    devCredentialsFile,
    notifier,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
          setTimeout(() => server.closeAllConnections(), 2000).unref();
        });
        dropped.stop();
        handshakeTimeouts.stop();
        await notifier?.stop();
        await closeContext();
      })();
      return closing;
    },
  };
}
