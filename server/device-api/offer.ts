// Which image a device is offered. Until releases exist this is the most recently ingested valid image
// for the device's chip (or for any chip, when the chip is not known).
import type { CatalogImage } from "../catalog/catalog";
import type { Context } from "../context";

export interface Asker {
  deviceId: string | null;
  chip: string | null;
  version: string | null;
}

export function chooseImage(ctx: Context, asker: Asker): CatalogImage | undefined {
  return ctx.catalog.latest(asker.chip);
}
