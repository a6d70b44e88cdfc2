// Everything a request handler may need, built once at start.
import type { Logger } from "pino";
import type { AuditLog } from "./audit/audit-log";
import type { Credentials } from "./auth/credentials";
import type { BlobStore } from "./catalog/blob-store";
import type { Catalog } from "./catalog/catalog";
import type { FolderWatcher } from "./catalog/folder-watcher";
import type { Config } from "./config/config";
import type { NonceCache } from "./device-api/nonce-cache";
import type { DeviceRegistry } from "./devices/registry";
import type { PartitionTable } from "./esp";
import type { ReleaseStore } from "./releases/release-store";
import type { RolloutManager } from "./rollouts/rollout-manager";
import type { Store } from "./store/db";

export interface Context {
  config: Config;
  log: Logger;
  store: Store;
  credentials: Credentials;
  devices: DeviceRegistry;
  blobs: BlobStore;
  catalog: Catalog;
  watcher: FolderWatcher;
  partitions: PartitionTable;
  nonces: NonceCache;
  audit: AuditLog;
  releases: ReleaseStore;
  rollouts: RolloutManager;
}
