// The error-code registry (server/api/http/error-codes.ts) against its documentation and the code that answers
// with it: each API's "Error codes" table lists exactly the codes that API can answer, with the registry's
// status; prose that puts a code next to a status names a real code with that status; so do the operator API's
// OpenAPI response descriptions; and every code the server's source throws is registered (the types check the
// same, this catches a cast).
import fs from "node:fs";
import path from "node:path";
import { ERROR_CODES, type ErrorCode, type ErrorCodeInfo } from "../../server/api/http/error-codes";
import { HttpError, sendError } from "../../server/api/http/errors";
import { buildOpenApi } from "../../server/api/operator/openapi";

const ROOT = path.join(__dirname, "../..");
/** The registry's own file, left out of the scan of the server's source (it names every code). */
const REGISTRY_FILE = "server/api/http/error-codes.ts";
const REGISTRY: Record<string, ErrorCodeInfo> = ERROR_CODES;
const CODES = Object.keys(ERROR_CODES) as ErrorCode[];

/** Where each API's codes are documented: codes of `api: "both"` are in both tables. */
const TABLES = { device: "docs/protocol.md", operator: "docs/operations.md" } as const;
type Api = keyof typeof TABLES;
const answeredBy = (code: string, api: Api) => REGISTRY[code]!.api === api || REGISTRY[code]!.api === "both";

/** How an error code is spelled: lower-case words joined by underscores (at least two words). */
const CODE_WORD = "[a-z][a-z0-9]*(?:_[a-z0-9]+)+";
const CODE_RE = new RegExp(`^${CODE_WORD}$`);

const read = (rel: string) => fs.readFileSync(path.join(ROOT, rel), "utf8");
const lineOf = (text: string, index: number) => text.slice(0, index).split("\n").length;

interface Row {
  code: string;
  status: number;
  meaning: string;
  line: number;
}

/** The rows of the "### Error codes" table of a document; lines in that table that are not rows are errors. */
function errorTable(rel: string): { rows: Row[]; problems: string[] } {
  const text = read(rel);
  const start = text.search(/^### Error codes\s*$/m);
  if (start < 0) return { rows: [], problems: [`${rel}: no "### Error codes" section`] };
  const rest = text.slice(start);
  const bodyStart = rest.indexOf("\n") + 1;
  const next = rest.slice(bodyStart).search(/^#{1,3} /m);
  const section = next < 0 ? rest : rest.slice(0, bodyStart + next);
  const firstLine = lineOf(text, start);
  const rows: Row[] = [];
  const problems: string[] = [];
  let header = false;
  section.split("\n").forEach((line, i) => {
    if (!line.startsWith("|")) return;
    if (/^\|\s*code\s*\|\s*status\s*\|\s*meaning\s*\|$/.test(line)) return void (header = true);
    if (/^\|(\s*:?-+:?\s*\|){3}$/.test(line)) return;
    const m = /^\| `([^`]+)` \| (\d{3}) \| (.*\S) \|$/.exec(line);
    if (!m) return void problems.push(`${rel}:${firstLine + i}: not a | \`code\` | status | meaning | row: ${line}`);
    rows.push({ code: m[1]!, status: Number(m[2]), meaning: m[3]!, line: firstLine + i });
  });
  if (!header) problems.push(`${rel}: the Error codes section has no | code | status | meaning | table`);
  return { rows, problems };
}

interface Mention {
  where: string;
  status: number;
  code: string;
  text: string;
}

/**
 * Codes that prose puts next to an error status: "409 `nonce_reused`", "`404 no_firmware`", "`400`
 * (`invalid_name`, `invalid_hash`)", "`422 image_not_found`, `via_not_found`", and table rows whose first cell is
 * a status. Only backticked words spelled like a code count; header names, fields and constants are not.
 */
function mentions(text: string, where: string): Mention[] {
  const found: Mention[] = [];
  const add = (index: number, status: string, words: string, snippet: string) => {
    for (const w of words.matchAll(new RegExp("`(" + CODE_WORD + ")`", "g"))) {
      found.push({ where: `${where}:${lineOf(text, index)}`, status: Number(status), code: w[1]!, text: snippet.trim() });
    }
  };
  const more = "((?:,\\s*`" + CODE_WORD + "`)*)";
  // 409 `nonce_reused`, `other_code` (the status plain or in its own code span)
  for (const m of text.matchAll(new RegExp("(?<![\\w.-])`?([45]\\d\\d)`?\\s+(`" + CODE_WORD + "`" + more + ")", "g"))) {
    add(m.index, m[1]!, m[2]!, m[0]);
  }
  // `404 no_firmware`, `other_code`
  for (const m of text.matchAll(new RegExp("`([45]\\d\\d) (" + CODE_WORD + ")`" + more, "g"))) {
    add(m.index, m[1]!, "`" + m[2]! + "`" + m[3]!, m[0]);
  }
  // `400` (`invalid_name`, `invalid_hash`, ...), possibly across lines
  for (const m of text.matchAll(/(?<![\w.-])`?([45]\d\d)`?\s*\(([^()]*)\)/g)) add(m.index, m[1]!, m[2]!, m[0]);
  // | 409 | ... (`image_too_large`) ... |
  for (const m of text.matchAll(/^\|\s*([45]\d\d)\s*\|(.*)$/gm)) add(m.index, m[1]!, m[2]!, m[0]);
  return found;
}

function markdownFiles(): string[] {
  const docs = fs.readdirSync(path.join(ROOT, "docs")).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`);
  return [...docs, "README.md", "device/README.md"].filter((f) => fs.existsSync(path.join(ROOT, f)));
}

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) return sourceFiles(rel);
    return e.name.endsWith(".ts") ? [rel] : [];
  });
}

interface Use {
  where: string;
  status: number | null;
  code: string;
}

/** The status each helper answers with (the local ones too: device-api's unauthorized, conflict, unprocessable). */
const HELPER_STATUS: Record<string, number | null> = {
  badRequest: 400,
  unauthorized: 401,
  "new AuthChallenge": 401,
  forbidden: 403,
  notFound: 404,
  conflict: 409,
  unprocessable: 422,
  "new RolloutError": null, // answered with the registry's status (server/api/operator/rollouts.ts)
  "new HttpError": null, // the status is the first argument
  sendError: null, // the status is the second argument
};

/**
 * String literals the server passes as error codes: to HttpError and its helpers, AuthChallenge, RolloutError
 * and sendError, with the status the call gives or the helper implies; and literals in an expression that
 * `satisfies ErrorCode`.
 */
function codeUses(rel: string, text: string): Use[] {
  const uses: Use[] = [];
  const call =
    /\b(new\s+(?:HttpError|AuthChallenge|RolloutError)|badRequest|unauthorized|forbidden|notFound|conflict|unprocessable|sendError)\(\s*(?:res\s*,\s*)?(?:([^,"()]*?)\s*,\s*)?"([^"]*)"/g;
  for (const m of text.matchAll(call)) {
    const callee = m[1]!.replace(/\s+/, " ");
    const given = /^(\d{3})\b/.exec(m[2] ?? "")?.[1]; // 409, or 409 as never
    const status = given ? Number(given) : (HELPER_STATUS[callee] ?? null);
    uses.push({ where: `${rel}:${lineOf(text, m.index)}`, status, code: m[3]! });
  }
  for (const m of text.matchAll(/\(([^()]*)\)\s*satisfies\s+ErrorCode\b/g)) {
    for (const lit of m[1]!.matchAll(/"([^"]*)"/g)) uses.push({ where: `${rel}:${lineOf(text, m.index)}`, status: null, code: lit[1]! });
  }
  return uses;
}

describe("the error-code registry", () => {
  it("holds codes spelled as codes, each with an error status, an API and a one-sentence meaning", () => {
    const bad: string[] = [];
    for (const [code, info] of Object.entries(REGISTRY)) {
      if (!CODE_RE.test(code)) bad.push(`${code}: not lower_snake_case of two or more words`);
      if (!Number.isInteger(info.status) || info.status < 400 || info.status > 599) bad.push(`${code}: status ${info.status} is not an error status`);
      if (!["device", "operator", "both"].includes(info.api)) bad.push(`${code}: api ${info.api}`);
      if (!/^\S.*[.]$/.test(info.meaning) || /[.!?]\s+[A-Z]/.test(info.meaning)) bad.push(`${code}: the meaning is not one sentence ending in "."`);
      if (!info.meaning.includes(";")) bad.push(`${code}: the meaning should say what happened; then what the caller should do`);
    }
    expect(bad).toEqual([]);
  });

  it("is what HttpError and sendError check: a status that is not the code's is refused even past the types", () => {
    expect(new HttpError(409, "nonce_reused", "replayed").status).toBe(409);
    expect(() => new HttpError(400 as never, "nonce_reused", "replayed")).toThrow(/nonce_reused is answered with 409, not 400/);
    expect(() => new HttpError(400 as never, "no_such_code" as never, "x")).toThrow(/not in error-codes\.ts/);
    const status = jest.fn();
    const res = { status } as unknown as Parameters<typeof sendError>[0];
    expect(() => sendError(res, 400 as never, "too_many_auth_failures", "x")).toThrow(/answered with 429, not 400/);
    expect(status).not.toHaveBeenCalled();
  });
});

describe.each(Object.entries(TABLES) as [Api, string][])("the %s API's Error codes table (%s)", (api, rel) => {
  const { rows, problems } = errorTable(rel);

  it("is a well-formed table", () => {
    expect(problems).toEqual([]);
  });

  it("lists every code this API answers with", () => {
    const listed = new Set(rows.map((r) => r.code));
    const missing = CODES.filter((c) => answeredBy(c, api) && !listed.has(c)).map(
      (c) => `| \`${c}\` | ${REGISTRY[c]!.status} | ${REGISTRY[c]!.meaning} |`,
    );
    expect(missing).toEqual([]);
  });

  it("names only registered codes of this API, once each", () => {
    const wrong = rows.flatMap((r) => {
      if (!(r.code in REGISTRY)) return [`${rel}:${r.line}: ${r.code} is not in ${REGISTRY_FILE}`];
      if (!answeredBy(r.code, api)) return [`${rel}:${r.line}: ${r.code} is answered by the ${REGISTRY[r.code]!.api} API only`];
      return [];
    });
    const seen = new Set<string>();
    for (const r of rows) {
      if (seen.has(r.code)) wrong.push(`${rel}:${r.line}: ${r.code} is listed twice`);
      seen.add(r.code);
    }
    expect(wrong).toEqual([]);
  });

  it("gives each code the registry's status", () => {
    const wrong = rows
      .filter((r) => r.code in REGISTRY && REGISTRY[r.code]!.status !== r.status)
      .map((r) => `${rel}:${r.line}: ${r.code} is ${REGISTRY[r.code]!.status}, not ${r.status}`);
    expect(wrong).toEqual([]);
  });
});

describe("codes named next to a status", () => {
  const all = markdownFiles().flatMap((rel) => mentions(read(rel), rel));

  it("are found in the docs' prose (the scan itself works)", () => {
    expect(all.length).toBeGreaterThan(60);
    expect(all).toContainEqual(expect.objectContaining({ status: 409, code: "ambiguous_version" })); // 409 `ambiguous_version`
    expect(all).toContainEqual(expect.objectContaining({ status: 404, code: "no_firmware" })); // `404 no_firmware`
    expect(all).toContainEqual(expect.objectContaining({ status: 403, code: "device_key_required" })); // `403` (`...`, `device_key_required`)
    expect(all).toContainEqual(expect.objectContaining({ status: 422, code: "via_below_min_version" })); // `422 a`, `b`, ...
  });

  it("in the docs are registered codes with that status", () => {
    const wrong = all
      .filter((m) => REGISTRY[m.code]?.status !== m.status)
      .map((m) =>
        m.code in REGISTRY
          ? `${m.where}: ${m.code} is ${REGISTRY[m.code]!.status}, not ${m.status} ("${m.text}")`
          : `${m.where}: ${m.code} is not a registered error code ("${m.text}")`,
      );
    expect(wrong).toEqual([]);
  });

  it("in the operator API's OpenAPI response descriptions are registered codes with that status", () => {
    const doc = buildOpenApi("test") as { paths: Record<string, Record<string, { responses: Record<string, { description: string }> }>> };
    const wrong: string[] = [];
    let checked = 0;
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        for (const [status, { description }] of Object.entries(op.responses)) {
          if (Number(status) < 400) continue;
          for (const w of description.matchAll(new RegExp("`(" + CODE_WORD + ")`", "g"))) {
            checked++;
            if (REGISTRY[w[1]!]?.status !== Number(status)) wrong.push(`${method.toUpperCase()} ${p} ${status}: ${w[1]}`);
            else if (!answeredBy(w[1]!, "operator")) wrong.push(`${method.toUpperCase()} ${p} ${status}: ${w[1]} is a device API code`);
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(50);
    expect(wrong).toEqual([]);
  });
});

describe("the server's source", () => {
  const all = sourceFiles("server");
  const files = all.filter((f) => f !== REGISTRY_FILE);
  const texts = new Map(files.map((f) => [f, read(f)]));
  const uses = files.flatMap((f) => codeUses(f, texts.get(f)!));

  it("is scanned in every folder, with only the registry left out", () => {
    expect(all).toContain(REGISTRY_FILE);
    expect(files).toEqual(expect.arrayContaining(["server/api/device/manifest.ts", "server/api/operator/rollouts.ts", "server/domain/rollouts/rollout-manager.ts"]));
  });

  it("passes only registered codes, with their status, where it makes an error answer", () => {
    expect(uses.length).toBeGreaterThan(60); // the scan itself works
    const wrong = uses
      .filter((u) => !(u.code in REGISTRY) || (u.status !== null && REGISTRY[u.code]!.status !== u.status))
      .map((u) => (u.code in REGISTRY ? `${u.where}: ${u.code} with ${u.status}, registered as ${REGISTRY[u.code]!.status}` : `${u.where}: ${u.code} is not registered`));
    expect(wrong).toEqual([]);
  });

  it("answers with every registered code somewhere (no code is kept that nothing sends)", () => {
    const everything = [...texts.values()].join("\n");
    const unused = CODES.filter((c) => !everything.includes(`"${c}"`));
    expect(unused).toEqual([]);
  });
});
