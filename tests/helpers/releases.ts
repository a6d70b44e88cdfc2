// A compiled release for the pure-rule tests: every field a plain default, each call a new, higher id (newer).
import { compileRelease, type CompiledRelease, type Release } from "../../server/domain/releases/release-store";

let nextId = 0;

export function release(o: Partial<Release> = {}): CompiledRelease {
  nextId++;
  return compileRelease({
    id: nextId,
    name: `r${nextId}`,
    channel: "stable",
    imageSha256: "0".repeat(64),
    version: "1.0.0",
    chip: "esp32",
    minChipRev: 0,
    maxChipRev: null,
    notes: "",
    targets: { groups: [], tags: [], devices: [] },
    minVersion: null,
    via: null,
    allowDowngrade: false,
    createdAt: "",
    createdBy: "t",
    signer: null,
    ...o,
  });
}
