// Every error code the server answers with, in one place: {"error": {"code", "message"}} always carries one of
// these. A code has exactly one HTTP status, so a client may act on either and they never disagree.
//
// Codes are a public contract (devices in the field and operators' scripts read them): never change a code's
// status or reuse a code for something else; add a new code instead. docs/protocol.md (device API) and
// docs/operations.md (operator API) each have an "Error codes" table, kept complete by
// tests/server/error-codes.test.ts.

export interface ErrorCodeInfo {
  /** The one HTTP status this code is answered with. */
  readonly status: number;
  /**
   * Which API can answer it, and so which table documents it: the device API (docs/protocol.md), the operator
   * API (docs/operations.md), or both (in both tables).
   */
  readonly api: "device" | "operator" | "both";
  /** What happened and what the caller should do, in one sentence. */
  readonly meaning: string;
}

export const ERROR_CODES = {
  // The HTTP layer: any request, before or around an endpoint.
  malformed_request: {
    status: 400,
    api: "both",
    meaning: "The request is not valid HTTP, so the connection is closed; fix the client's request line or headers.",
  },
  missing_host: {
    status: 400,
    api: "both",
    meaning: "An HTTP/1.1 request came without a Host header; send one.",
  },
  request_timeout: {
    status: 408,
    api: "both",
    meaning: "The request did not arrive completely in time, so the connection is closed; send it again.",
  },
  headers_too_large: {
    status: 431,
    api: "both",
    meaning: "The request headers exceed the server's limit (16 KiB); send fewer or shorter headers.",
  },
  invalid_path: {
    status: 400,
    api: "both",
    meaning: "The request path is not valid percent-encoding; encode it correctly.",
  },
  not_found: {
    status: 404,
    api: "both",
    meaning: "No endpoint answers this method and path; check the URL and method against the documentation.",
  },
  method_not_allowed: {
    status: 405,
    api: "device",
    meaning: "The endpoint does not accept this method; use one that the Allow header names.",
  },
  unsupported_media_type: {
    status: 415,
    api: "both",
    meaning:
      "The body's Content-Type is not what the endpoint reads; send application/json (multipart/form-data for a firmware upload).",
  },
  unsupported_encoding: {
    status: 415,
    api: "both",
    meaning: "The body is compressed or in a charset the server does not read; send uncompressed UTF-8 JSON.",
  },
  body_too_large: {
    status: 413,
    api: "both",
    meaning: "The request body is larger than the endpoint accepts (8 KiB for a report, 64 KiB for an operator request); send less.",
  },
  request_aborted: {
    status: 400,
    api: "both",
    meaning: "The request body ended before all of it arrived; send it again.",
  },
  invalid_json: {
    status: 400,
    api: "both",
    meaning: "The request body is not valid JSON; send a JSON object.",
  },
  invalid_request: {
    status: 400,
    api: "both",
    meaning: "A field, query parameter or path parameter is missing or invalid; the message and `fields` name it, so correct it.",
  },
  bad_request: {
    status: 400,
    api: "both",
    meaning: "The request could not be processed for a reason no other code covers; the message says what, so correct the request.",
  },
  internal_error: {
    status: 500,
    api: "both",
    meaning:
      "The server failed to handle the request and logged the fault under the request's X-Request-Id; retry later, and report it if it persists.",
  },
  database_unavailable: {
    status: 503,
    api: "both",
    meaning: "The server cannot reach its database (PostgreSQL) just now, so nothing was done; retry after the seconds Retry-After says.",
  },
  dashboard_not_built: {
    status: 503,
    api: "operator",
    meaning: "The dashboard's files are not in dist/dashboard; run npm run build (npm start does) and reload the page.",
  },

  // Authentication, on either API.
  missing_credential: {
    status: 401,
    api: "both",
    meaning:
      "No credential was sent; send a device or fleet key on the device API, or an operator token as Authorization: Bearer on the operator API and /metrics (there the metrics token too).",
  },
  invalid_credential: {
    status: 401,
    api: "both",
    meaning:
      "The key, or the Authorization header, is not valid (for this device); check that it is whole and was issued by this server, for this device.",
  },
  wrong_credential_kind: {
    status: 403,
    api: "both",
    meaning:
      "An operator token was sent to the device API, or a device or fleet key to the operator API or /metrics; use the credential made for that API.",
  },
  too_many_auth_failures: {
    status: 429,
    api: "both",
    meaning:
      "Too many wrong or revoked credentials came from this address; wait the seconds Retry-After says, then retry with a valid credential.",
  },

  // Device API: authentication and who the device is.
  credential_in_query: {
    status: 400,
    api: "device",
    meaning:
      "A credential was put in the URL, where it ends up in logs; send it in X-API-Key or as the HTTP Basic password, and replace the key if it was real.",
  },
  invalid_device_id: {
    status: 400,
    api: "device",
    meaning:
      "X-Device-Id, x-ESP32-STA-MAC or the Basic user name is not a device id; send 1-64 letters, digits, `.`, `_`, `:`, `-`, or a MAC.",
  },
  conflicting_device_id: {
    status: 400,
    api: "device",
    meaning: "The request names two different devices; send one device id, the same wherever it appears.",
  },
  device_id_required: {
    status: 400,
    api: "device",
    meaning:
      "A device key came without the device id it belongs to; send X-Device-Id (or x-ESP32-STA-MAC, or the Basic user name) with it.",
  },
  credential_revoked: {
    status: 401,
    api: "device",
    meaning:
      "The key (a device's own key or a fleet key) has been revoked; provision the device again to give it a new key, or use another fleet key.",
  },
  device_key_required: {
    status: 403,
    api: "device",
    meaning: "A fleet key was used for a device that has its own key; use the device's own key.",
  },
  device_revoked: {
    status: 403,
    api: "device",
    meaning: "A fleet key was used for a device id that has been revoked, and no key may speak for it; provision the device again to give it a new key.",
  },
  device_mismatch: {
    status: 403,
    api: "device",
    meaning: "The report names another device than the one the request is authenticated for; report only for that device.",
  },
  report_not_stored: {
    status: 503,
    api: "device",
    meaning:
      "The server could not store the report (its storage failed), so nothing of it counts; send the same report again later, with the same report_id.",
  },

  // Device API: the manifest and the offer.
  unknown_chip: {
    status: 400,
    api: "device",
    meaning: "X-Device-Chip or ?chip= names no chip the server knows; send one of the documented chip names.",
  },
  invalid_chip_rev: {
    status: 400,
    api: "device",
    meaning: "X-Device-Chip-Rev is not a whole number 0-65535; send major × 100 + minor (301 for v3.1).",
  },
  invalid_version: {
    status: 400,
    api: "device",
    meaning: "X-Device-Version is not 1-32 printable ASCII characters; send the version from the running app's descriptor.",
  },
  invalid_nonce: {
    status: 400,
    api: "device",
    meaning: "X-Nonce is not 16-64 characters of A-Z a-z 0-9 _ -; send a fresh random nonce of that form.",
  },
  nonce_required: {
    status: 400,
    api: "device",
    meaning: "A manifest request with X-Device-Id came without X-Nonce; send a fresh random nonce with every request.",
  },
  nonce_reused: {
    status: 409,
    api: "device",
    meaning: "This device already used this X-Nonce within 10 minutes, so the request is refused as a replay; send a fresh nonce.",
  },
  no_firmware: {
    status: 404,
    api: "device",
    meaning:
      "Nothing is offered to this device now (no image for its chip yet, its chip is unknown, or no release is assigned to it); the message says which, so poll again later.",
  },
  waiting_for_rollout_stage: {
    status: 404,
    api: "device",
    meaning:
      "A release is for this device, but its staged rollout has not reached it yet (its current stage leaves the device out, or the rollout is paused); the message names the release and the stage, so keep polling.",
  },
  invalid_header: {
    status: 400,
    api: "device",
    meaning: "A header the client sends about itself (x-ESP32-*) has an invalid value; the message names the header.",
  },
  filesystem_image_not_available: {
    status: 404,
    api: "device",
    meaning: "A filesystem image (x-ESP32-mode other than sketch) was asked for, but the server serves app images only; call update(), not updateSpiffs().",
  },
  chip_mismatch: {
    status: 409,
    api: "device",
    meaning:
      "The chip the request names differs from the chip of the image the device runs, or of the image offered; fix the chip in the device's update URL.",
  },
  image_too_large: {
    status: 409,
    api: "device",
    meaning:
      "The offered image is larger than the free OTA slot the device reported (x-ESP32-free-space); give the device a partition table with larger app slots.",
  },

  // Firmware bytes (device downloads; also the operator API's image lookups).
  invalid_name: {
    status: 400,
    api: "device",
    meaning: "The firmware file name breaks the name rule (letters, digits, `.`, `_`, `+`, `-`, ending in .bin); fix the URL.",
  },
  invalid_hash: {
    status: 400,
    api: "both",
    meaning: "The SHA-256 in the URL is not 64 hex digits; use the hash as the manifest or the firmware list gives it.",
  },
  firmware_not_found: {
    status: 404,
    api: "both",
    meaning: "No image has this name, version or SHA-256; list the images, or ask the manifest what is offered.",
  },
  ambiguous_version: {
    status: 409,
    api: "device",
    meaning: "This version exists for several chips; say which chip with X-Device-Chip or ?chip=.",
  },
  range_not_satisfiable: {
    status: 416,
    api: "device",
    meaning:
      "The Range header is malformed, asks for several ranges, or starts past the end of the file; ask for one range within the size Content-Range gives.",
  },

  // Operator API: tokens and roles.
  invalid_token: {
    status: 401,
    api: "operator",
    meaning: "The bearer token is not an operator token of this server (nor, on /metrics, the metrics token); log in again with a valid one.",
  },
  token_expired: {
    status: 401,
    api: "operator",
    meaning: "The operator token has expired; ask an admin for a new one.",
  },
  token_revoked: {
    status: 401,
    api: "operator",
    meaning: "The operator token has been revoked; ask an admin for a new one.",
  },
  insufficient_role: {
    status: 403,
    api: "operator",
    meaning: "The token's role is too low for this action; use a token with the role the message names.",
  },
  token_not_found: {
    status: 404,
    api: "operator",
    meaning: "No operator token has this id; list the tokens (ota token list) for the right one.",
  },
  apikey_not_found: {
    status: 404,
    api: "operator",
    meaning: "No fleet key has this id; list the fleet keys (ota apikey list) for the right one.",
  },

  // Operator API: firmware uploads.
  upload_too_large: {
    status: 413,
    api: "operator",
    meaning: "The uploaded image is larger than the smallest OTA slot of the partition table; build a smaller image or use larger slots.",
  },
  unexpected_field: {
    status: 400,
    api: "operator",
    meaning: "The upload has a file field other than `file`; send the image in one field named file.",
  },
  invalid_upload: {
    status: 400,
    api: "operator",
    meaning: "The multipart body is malformed or breaks the upload limits; send one file field and at most a name field.",
  },
  missing_file: {
    status: 400,
    api: "operator",
    meaning: "The upload has no file; send the image as the multipart/form-data field file.",
  },
  invalid_image: {
    status: 422,
    api: "operator",
    meaning:
      "The upload is not a valid ESP-IDF app image for this server, or not signed by a key in OTA_SIGNING_KEYS (`reason` says why: a bootloader, a bad checksum, `unsigned`, `untrusted_signer`, ...); upload the app .bin, signed if the server checks signatures.",
  },
  name_taken: {
    status: 409,
    api: "operator",
    meaning: "A different image already has this file name; choose another name.",
  },

  // Operator API: devices, releases and rollouts.
  device_not_found: {
    status: 404,
    api: "operator",
    meaning: "No device has this id; devices appear when they first poll, report or are provisioned.",
  },
  pinned_release_not_found: {
    status: 422,
    api: "operator",
    meaning: "pinned_release names no release; create the release first, or give the name of an existing one.",
  },
  release_not_found: {
    status: 404,
    api: "operator",
    meaning: "No release has this name; list the releases for the right one.",
  },
  release_in_use: {
    status: 409,
    api: "operator",
    meaning: "The release cannot be deleted while its rollout is running or paused, a release leads through it (via) or devices are pinned to it; the message says which: abort, delete or unpin those first.",
  },
  image_in_use: {
    status: 409,
    api: "operator",
    meaning: "Releases use this image, so it cannot be deleted; delete those releases first (the message names them).",
  },
  file_holds_image: {
    status: 409,
    api: "operator",
    meaning: "The file holds an ingested image; delete the image (DELETE /api/v1/firmware/{sha256}) or remove the file from the folder.",
  },
  file_not_found: {
    status: 404,
    api: "operator",
    meaning: "No firmware file has this name; list the files (GET /api/v1/firmware/files).",
  },
  release_exists: {
    status: 409,
    api: "operator",
    meaning: "A release with this name already exists and releases never change; choose another name.",
  },
  image_not_found: {
    status: 422,
    api: "operator",
    meaning: "The release's image names no ingested image; give the SHA-256 or file name of one from the firmware list.",
  },
  via_not_found: {
    status: 422,
    api: "operator",
    meaning: "via names no release; create the intermediate release first.",
  },
  via_incompatible: {
    status: 422,
    api: "operator",
    meaning: "The via release is for another chip than this release's image; choose an intermediate release for the same chip.",
  },
  via_below_min_version: {
    status: 422,
    api: "operator",
    meaning: "The via release runs a version below min_version, so devices would never get past it; choose an intermediate release at or above min_version.",
  },
  rollout_not_found: {
    status: 404,
    api: "operator",
    meaning: "No rollout has this id, and no release with this name has one; list the rollouts for the right reference.",
  },
  rollout_exists: {
    status: 409,
    api: "operator",
    meaning: "This release already has its rollout, and a release is rolled out once; to try again, create a new release.",
  },
  invalid_transition: {
    status: 409,
    api: "operator",
    meaning: "The rollout's state does not allow this action (for example resuming one that is not paused); check its state first.",
  },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The status a code is answered with. */
export type StatusOf<C extends ErrorCode> = (typeof ERROR_CODES)[C]["status"];

/** The codes answered with status S, e.g. CodeWithStatus<409> for a helper that throws 409s. */
export type CodeWithStatus<S extends number> = { [C in ErrorCode]: StatusOf<C> extends S ? C : never }[ErrorCode];

