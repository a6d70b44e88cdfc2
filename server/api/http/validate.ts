// Boundary validation helpers: parse with zod or answer 400 naming the field.
import type { z } from "zod";
import { z as zod } from "zod";
import { validationError } from "./errors";

export function parseWith<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw validationError(r.error, where);
  return r.data;
}

/** A query-string integer within bounds. */
export const queryInt = (min: number, max: number) =>
  zod
    .string()
    .regex(/^[0-9]{1,10}$/, "must be a whole number")
    .transform(Number)
    .pipe(zod.number().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));
