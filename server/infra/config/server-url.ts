// The limit the device agent puts on the server URL it keeps. It depends on nothing, so the configuration
// (OTA_PUBLIC_URL), the operator API and provisioning can all check a URL against it.

/**
 * The longest server URL the device agent can keep: it stores it as the setting `server_url` (a JSON string),
 * and reads a setting back in one 232-byte packet with its name and a NUL (device/README.md, "Settings").
 */
export const MAX_SERVER_URL_LENGTH = 232 - "server_url".length - 1 - 2;

export const SERVER_URL_TOO_LONG = `is longer than the ${MAX_SERVER_URL_LENGTH} characters the device agent can keep; use a shorter host name or path`;
