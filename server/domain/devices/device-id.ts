// Device ids: 1-64 characters of letters, digits and . _ : -. MAC addresses in any common spelling
// (AA:BB:CC:DD:EE:FF, aa-bb-cc-dd-ee-ff, aabbccddeeff) become one canonical form, aa:bb:cc:dd:ee:ff, so a
// device is the same device whether it sends its id or an Arduino x-ESP32-STA-MAC header.
import { z } from "zod";

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
const MAC_RE = /^([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})[:-]?([0-9A-Fa-f]{2})$/;

export function normalizeDeviceId(raw: string): string | null {
  const id = raw.trim();
  if (!ID_RE.test(id)) return null;
  const mac = MAC_RE.exec(id);
  if (mac) {
    const seps = id.replace(/[0-9A-Fa-f]/g, "");
    // Only all-separated or unseparated spellings are MACs; "aa:bbcc..." is just an id.
    if (seps === "" || seps === ":::::" || seps === "-----") return mac.slice(1).join(":").toLowerCase();
  }
  return id;
}

export const DEVICE_ID_RULE = "1-64 characters: letters, digits, '.', '_', ':', '-' (starting with a letter or digit)";

export const deviceIdSchema = z
  .string()
  .max(64, `device id must be ${DEVICE_ID_RULE}`)
  .transform((v, ctx) => {
    const id = normalizeDeviceId(v);
    if (id === null) {
      ctx.addIssue({ code: "custom", message: `device id must be ${DEVICE_ID_RULE}` });
      return z.NEVER;
    }
    return id;
  });
