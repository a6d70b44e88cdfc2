// Side-by-side measurement: the same load against our server and the references (nginx, bare Node.js, and with
// --compare the baseline build), alternated round by round with the starting side rotated, so that a noisy
// neighbour on the machine slows all alike. Only one side is loaded at a time. Each side keeps its best round
// (noise only ever slows a run down).
//
// A side given as null is not run (the baseline when there is none); its list of rounds stays empty.
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
