// What authentication attaches to a request.
import type { Logger } from "pino";
import type { OperatorIdentity } from "../../infra/auth/credentials";
import type { DeviceRow } from "../../infra/store/schema";

export interface DeviceIdentity {
  /** "device": the device's own key; "fleet": a fleet API key (device id, if any, is only claimed). */
  kind: "device" | "fleet";
  /** The device this request speaks for, when known (X-Device-Id, x-ESP32-STA-MAC or the Basic user name). */
  id: string | null;
  /** Where the id came from: only an agent sending X-Device-Id is held to the nonce protocol. */
  idSource?: "X-Device-Id" | "x-ESP32-STA-MAC" | "basic-user";
  /** Key generation of a provisioned device (selects its MAC key). */
  generation: number;
  /** The chip the registry knows for this device, if any. */
  chip: string | null;
  /** The registry row read to authenticate it (null: none yet), so the offer decision does not read it again. */
  row?: DeviceRow | null;
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** The request id (request-log.ts): the client's X-Request-Id when well-formed, else a new one. */
      id: string;
      /** A logger whose lines carry the request id (made on first use). */
      log: Logger;
      device?: DeviceIdentity;
      operator?: OperatorIdentity;
    }
  }
}
