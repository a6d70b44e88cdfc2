// Reads a V8 CPU profile (`node --cpu-prof`, or `npm run bench -- --profile`) and prints where the time went:
// the functions with the most self time, and folded stacks for a flame graph (flamegraph.pl, speedscope).
//
//   node dist/bench/profile.js <file.cpuprofile> [--top 30] [--folded out.folded]
import fs from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

function label(n: Node): string {
  const f = n.callFrame;
  const file = f.url.replace(/^.*\/node_modules\//, "~/").replace(/^.*\/dist\//, "dist/").replace(/^node:/, "node:");
  return `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}`;
}

function main(): void {
  const [file, ...rest] = process.argv.slice(2);
  if (!file) throw new Error("usage: node dist/bench/profile.js <file.cpuprofile> [--top N] [--folded out.folded]");
  const top = Number(rest[rest.indexOf("--top") + 1]) || 30;
  const foldedOut = rest.includes("--folded") ? rest[rest.indexOf("--folded") + 1] : undefined;
  const p = JSON.parse(fs.readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const self = new Map<number, number>();
  let total = 0;
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    self.set(id, (self.get(id) ?? 0) + dt);
    total += dt;
  });
  const byLabel = new Map<string, number>();
  for (const [id, t] of self) {
    const l = label(byId.get(id)!);
    byLabel.set(l, (byLabel.get(l) ?? 0) + t);
  }
  const rows = [...byLabel].sort((a, b) => b[1] - a[1]).slice(0, top);
  console.log(`total ${(total / 1000).toFixed(0)} ms sampled`);
  for (const [l, t] of rows) console.log(`${((100 * t) / total).toFixed(1).padStart(5)}%  ${l}`);

  if (foldedOut) {
    const folded = new Map<string, number>();
    for (const [id, t] of self) {
      const stack: string[] = [];
      for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) stack.push(label(byId.get(cur)!).replace(/;/g, ","));
      const key = stack.reverse().join(";");
      folded.set(key, (folded.get(key) ?? 0) + t);
    }
    fs.writeFileSync(foldedOut, [...folded].map(([k, t]) => `${k} ${Math.round(t)}`).join("\n") + "\n");
    console.log(`folded stacks written to ${foldedOut}`);
  }
}

main();
