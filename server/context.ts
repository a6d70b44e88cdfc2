// Everything a request handler may need, built once at start.
import type { Logger } from "pino";
import type { AuditLog } from "./domain/audit/audit-log";
import type { Credentials } from "./infra/auth/credentials";
import type { BlobStore } from "./domain/catalog/blob-store";
import type { Catalog } from "./domain/catalog/catalog";
import type { FolderWatcher } from "./domain/catalog/folder-watcher";
import type { Config } from "./infra/config/config";
import type { Nonces } from "./api/device/nonce-cache";
import type { DeviceRegistry } from "./domain/devices/registry";
import type { PartitionTable } from "./esp";
import type { ReleaseStore } from "./domain/releases/release-store";
import type { RolloutManager } from "./domain/rollouts/rollout-manager";
import type { Store } from "./infra/store/db";

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
  nonces: Nonces;
  audit: AuditLog;
  releases: ReleaseStore;
  rollouts: RolloutManager;
}
