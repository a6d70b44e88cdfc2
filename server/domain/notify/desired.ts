// What an MQTT update notice says, as bytes: the device's MQTT name and topics, the notice's JSON, the canonical
// text its HMAC covers, and the JSON existing /firmware_update clients read (docs/protocol.md#mqtt-update-notices).
// Pure: the notifier (notifier.ts) decides when to publish what.
import { createHash, createHmac } from "node:crypto";

/** A device id that is a MAC (registry form aa:bb:cc:dd:ee:ff). */
const MAC_ID = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/;

/** The 12 upper-case hex digits of a MAC device id (`246F28AABBCC`, WiFi.macAddress() without colons); null for other ids. */
function macIdOf(deviceId: string): string | null {
  const m = MAC_ID.exec(deviceId);
  return m ? m.slice(1).join("").toUpperCase() : null;
}

/**
 * A device's name at the broker (its MQTT user name and the {device} of its topic): the MAC-ID for a MAC, else
 * the id itself. A MAC's colons would end the user name in a Mosquitto password file.
 */
export function mqttNameOf(deviceId: string): string {
  return macIdOf(deviceId) ?? deviceId;
}

function topicOf(template: string, deviceId: string): string {
  return template.split("{device}").join(mqttNameOf(deviceId));
}

/** The existing clients' topic: /firmware_update/<MAC-ID>; none for a device whose id is not a MAC. */
function compatTopicOf(deviceId: string): string | null {
  const mac = macIdOf(deviceId);
  return mac && `/firmware_update/${mac}`;
}

/** What a device is offered, as a notice names it. */
export interface NoticeOffer {
  release: string | null;
  version: string;
  sha256: string;
  size: number;
  url: string;
}

const MAGIC = "esp32-ota-notice/1";

/**
 * Identifies an offer and the key a notice of it is signed with (not the notice): the notifier publishes again
 * only when it changes, so a device given new keys gets a notice it can check.
 */
export function offerDigest(offer: NoticeOffer | null, keyGeneration: number): string {
  return createHash("sha256").update(`${keyGeneration}\n${offerLines(offer)}`).digest("hex");
}

function offerLines(offer: NoticeOffer | null): string {
  if (!offer) return "\n\n\n\n";
  return [offer.release ?? "", offer.version, offer.sha256, String(offer.size), offer.url].join("\n");
}

/**
 * The exact text the notice's HMAC covers, UTF-8, lines joined by "\n" (no trailing newline):
 *   esp32-ota-notice/1, device id, seq (decimal), release (empty if none), version, sha256, size (decimal), url
 * With no offer the last five lines are empty. No field can hold a newline (ids, versions, release names and
 * URLs are printable ASCII without one).
 */
function noticeMacInput(deviceId: string, seq: number, offer: NoticeOffer | null): string {
  return `${MAGIC}\n${deviceId}\n${seq}\n${offerLines(offer)}`;
}

export interface Notice {
  topic: string;
  payload: string;
  compatTopic: string | null;
  compatPayload: string | null;
}

/** The retained messages for one device's notice `seq`, signed with its own MAC key. */
export function buildNotice(
  o: { topicTemplate: string; compat: boolean; macKey: Buffer },
  deviceId: string,
  seq: number,
  offer: NoticeOffer | null,
  issuedAt: string,
): Notice {
  const hmac = createHmac("sha256", o.macKey).update(noticeMacInput(deviceId, seq, offer), "utf8").digest("hex");
  const payload = JSON.stringify({ v: 1, device_id: deviceId, seq, offer, issued_at: issuedAt, hmac });
  const compatTopic = o.compat ? compatTopicOf(deviceId) : null;
  // The fields a client reading /firmware_update expects, named as the manifest names them (an empty object: nothing to install).
  const compatPayload =
    compatTopic === null
      ? null
      : JSON.stringify(
          offer
            ? { version: offer.version, url: offer.url, sha256: offer.sha256, size: offer.size, release: offer.release, seq, signature: hmac }
            : { seq, signature: hmac },
        );
  return { topic: topicOf(o.topicTemplate, deviceId), payload, compatTopic, compatPayload };
}
