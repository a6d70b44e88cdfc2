// Side-by-side measurement: the same load against our server and the references (nginx, bare Node.js, and with
// --compare the baseline build), alternated round by round with the starting side rotated, so that a noisy
// neighbour on the machine slows all alike. Only one side is loaded at a time. Each side keeps its best round
// (noise only ever slows a run down).
//
// A side given as null is not run (the baseline when there is none); its list of rounds stays empty.
import fs from "node:fs";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";

export async function alternate<K extends string, T>(rounds: number, sides: Record<K, (() => Promise<T>) | null>): Promise<Record<K, T[]>> {
  const all = Object.keys(sides) as K[];
  const names = all.filter((n) => sides[n] !== null);
  const out = Object.fromEntries(all.map((n) => [n, [] as T[]])) as Record<K, T[]>;
  for (let i = 0; i < rounds; i++) {
    for (let j = 0; j < names.length; j++) {
      const name = names[(i + j) % names.length]!;
      out[name].push(await sides[name]!());
    }
  }
  return out;
}

export const best = (xs: number[]) => Math.max(...xs);
export const round = (x: number, digits = 0) => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

/**
 * The baseline's copy of the data was made by this tree, whose schema may be newer. An older build refuses a
 * database that records migrations it does not know, so its copy forgets them (their tables and columns stay:
 * an older build never reads them). Only migrations named after the last one the baseline knows are forgotten.
 */
export function forgetUnknownMigrations(sqliteFile: string, baselineRoot: string): void {
  const known = new Set<string>();
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name === "migrations.js") for (const m of fs.readFileSync(p, "utf8").matchAll(/"(\d{4}_[a-z0-9_]+)"/g)) known.add(m[1]!);
    }
  };
  walk(path.join(baselineRoot, "dist", "server"));
  if (known.size === 0) return;
  const last = [...known].sort().at(-1)!;
  const db = new SqliteDatabase(sqliteFile);
  try {
    db.prepare("DELETE FROM kysely_migration WHERE name > ?").run(last);
  } finally {
    db.close();
  }
}
