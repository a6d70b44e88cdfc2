// ESP-IDF formats, as the server and the ESP32 emulator (device/host/) both read them: app images (header,
// segments, checksum, appended SHA-256, app descriptor), Secure Boot v2 signature sectors (parse, verify, sign),
// partition tables (CSV and binary) and chip ids.
// Self-contained: nothing here imports from the rest of server/. This file is the module's public surface;
// code outside server/esp/ imports from here, never from the files beside it.
export { CHIPS, CHIP_NAMES, normalizeChip } from "./chips";
export { APP_VERSION_RULE, AppVersionError, withAppVersion } from "./app-version";
export { APP_DESC_OFFSET, appImageLength, ImageError, maxChipRevision, otaSelectCrc, parseAppImage, type AppImage, type ImageRejectCode } from "./esp-image";
export {
  alignToSector,
  checkSignature,
  MAX_SIGNATURE_BLOCKS,
  parseSignatureSector,
  publicKeyDigest,
  readKey,
  SIGNATURE_BLOCK_MAGIC,
  SIGNATURE_SCHEMES,
  SIGNATURE_SECTOR_SIZE,
  SignatureKeyError,
  trustedKeyFromPem,
  type SignatureRejectCode,
  type SignatureScheme,
  type SignatureSector,
  type TrustedKey,
} from "./signature";
export {
  assembleSignedImage,
  blockFromDetachedSignature,
  generateSigningKey,
  prepareImage,
  signImage,
  SigningError,
} from "./signing";
export {
  APP_TYPE,
  DEFAULT_TABLE_OFFSET,
  decodePartitionTable,
  encodePartitionTable,
  OTA_SUBTYPE_MIN,
  parsePartitionsCsv,
  PartitionTableError,
  requireOtaLayout,
  type Partition,
  type PartitionTable,
} from "./partitions";
