// Queries built and compiled once, run many times: the hot paths (device lookups, sightings, reports) would
// otherwise rebuild and recompile the same Kysely query for every request. The SQL stays Kysely's, so it is
// the dialect's own (SQLite or PostgreSQL); with the statement cache in db.ts, SQLite also prepares it once.
import type { Compilable, CompiledQuery } from "kysely";

const MARK = "\u0000prepared:";

/**
 * `build` receives one placeholder per name and returns the query; `run(args)` gives the compiled query with
 * each placeholder replaced by its argument. Values the builder wrote literally stay as they are.
 */
export function preparedQuery<N extends string, R>(
  names: readonly N[],
  build: (p: Record<N, string>) => Compilable<R>,
): (args: Record<N, unknown>) => CompiledQuery<R> {
  const placeholders = Object.fromEntries(names.map((n) => [n, `${MARK}${n}`])) as Record<N, string>;
  const compiled = build(placeholders).compile();
  type Slot = { name: N; value?: undefined } | { name?: undefined; value: unknown };
  const slots: Slot[] = compiled.parameters.map((v) =>
    typeof v === "string" && v.startsWith(MARK) ? { name: v.slice(MARK.length) as N } : { value: v },
  );
  const missing = names.filter((n) => !slots.some((s) => s.name === n));
  if (missing.length) throw new Error(`prepared query does not use ${missing.join(", ")}`);
  return (args) => ({ ...compiled, parameters: slots.map((s) => (s.name !== undefined ? args[s.name] : s.value)) });
}
