// An upload the server answered 201 to must survive a power cut: traced with strace, the uploaded file is fsynced
// before it is renamed into the firmware folder, and the folder is fsynced after the rename, all before the
// server writes its answer on the client's connection.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import path from "node:path";
import { HELLO_WORLD, read } from "../helpers/fixtures";
import { ROOT, tempDirs, type Dirs } from "../helpers/server";
import { startServerProcess, type ServerProcess } from "../helpers/server-process";

const HAVE_STRACE = spawnSync("strace", ["-V"]).status === 0;
// In CI the test must run (.ci/run installs strace); elsewhere a machine without strace skips it and says why.
const itTraced: jest.It = HAVE_STRACE || process.env.CI ? it : (((name: string) => it.skip(`${name} [skipped: strace is not installed]`, () => undefined)) as unknown as jest.It);

interface Call {
  pid: string;
  name: string;
  args: string;
  ret: number;
  /** Line numbers in the trace where the call began and where it returned (the trace is in event order). */
  start: number;
  end: number;
}

/** Parses `strace -f -o FILE` output, joining calls another thread interrupted (`<unfinished ...>` / `resumed>`). */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<string, { name: string; args: string; start: number }>();
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    const resumed = /^(\d+)\s+(?:[\d.]+\s+)?<\.\.\. (\w+) resumed>(.*)$/.exec(line);
    if (resumed) {
      const [, pid, name, rest] = resumed;
      const begun = open.get(pid!);
      open.delete(pid!);
      const ret = /\)\s+=\s+(-?\d+)/.exec(rest!);
      if (begun && begun.name === name) calls.push({ pid: pid!, name: name, args: begun.args + rest!, ret: ret ? Number(ret[1]) : NaN, start: begun.start, end: i });
      return;
    }
    const call = /^(\d+)\s+(?:[\d.]+\s+)?(\w+)\((.*)$/.exec(line);
    if (!call) return;
    const [, pid, name, rest] = call;
    if (rest!.endsWith("<unfinished ...>")) {
      open.set(pid!, { name: name!, args: rest!.slice(0, -"<unfinished ...>".length).trimEnd(), start: i });
      return;
    }
    const ret = /\)\s+=\s+(-?\d+)/.exec(rest!);
    calls.push({ pid: pid!, name: name!, args: rest!, ret: ret ? Number(ret[1]) : NaN, start: i, end: i });
  });
  return calls;
}

/** The path strace -y shows for a call's first (descriptor) argument. */
const fdPath = (c: Call) => /^\d+<(.*?)>[,)]/.exec(c.args)?.[1];
/** The quoted string arguments of a call (paths). */
const strings = (c: Call) => [...c.args.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!);

/** POSTs the image as multipart on a connection of its own; reports that connection's local port. */
function upload(s: ServerProcess, firmwareDir: string, image: Buffer, name: string) {
  const boundary = `----t${randomBytes(8).toString("hex")}`;
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n${name}\r\n`),
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="app.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    image,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return new Promise<{ status: number; json: any; localPort: number; onDiskAtAnswer: boolean }>((resolve, reject) => {
    let localPort = 0;
    const req = https.request(
      {
        host: "127.0.0.1",
        servername: "localhost",
        port: s.port,
        path: "/api/v1/firmware",
        method: "POST",
        ca: s.ca,
        agent: false,
        headers: {
          Authorization: `Bearer ${s.creds.operatorToken}`,
          "Content-Type": `multipart/form-data; boundary=${boundary}`,
          "Content-Length": body.length,
        },
      },
      (res) => {
        // The moment the answer's head arrives: the file must already be in the folder.
        const onDiskAtAnswer = fs.existsSync(path.join(firmwareDir, name));
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString("utf8")), localPort, onDiskAtAnswer }));
      },
    );
    req.on("socket", (sock) => sock.once("secureConnect", () => (localPort = sock.localPort ?? 0)));
    req.on("error", reject);
    req.end(body);
  });
}

describe("upload durability", () => {
  let dirs: Dirs;
  beforeAll(() => {
    dirs = tempDirs();
    // Certificates made beforehand, so the traced process is only the server.
    const g = spawnSync("bash", [path.join(ROOT, "generate-certs.sh"), "--dir", dirs.certs], { encoding: "utf8" });
    expect(g.status).toBe(0);
  });
  afterAll(() => process.env.KEEP_TRACE ? undefined : fs.rmSync(dirs.root, { recursive: true, force: true }));

  itTraced("the file and its folder are fsynced before the 201 is written", async () => {
    const traceFile = path.join(dirs.root, "strace.txt");
    const s = await startServerProcess(dirs, {
      wrap: ["strace", "-f", "-qq", "-yy", "-s", "0", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,write,writev", "-o", traceFile],
    });
    let answer;
    try {
      answer = await upload(s, dirs.firmware, read(HELLO_WORLD), "traced.bin");
    } finally {
      await s.stop();
    }
    expect(answer.status).toBe(201);
    expect(answer.json.name).toBe("traced.bin");
    expect(answer.onDiskAtAnswer).toBe(true);
    expect(answer.localPort).toBeGreaterThan(0);

    const calls = parseTrace(fs.readFileSync(traceFile, "utf8"));
    const folder = fs.realpathSync(dirs.firmware);
    const target = path.join(folder, "traced.bin");
    const rename = calls.find((c) => /^rename(at2?)?$/.test(c.name) && c.ret === 0 && strings(c)[1] === target);
    expect(rename).toBeDefined();
    const tmp = strings(rename!)[0]!;
    expect(path.dirname(tmp)).toBe(folder);

    // The uploaded bytes reached the disk before the name pointed at them...
    const fileSync = calls.find((c) => /^f(data)?sync$/.test(c.name) && c.ret === 0 && fdPath(c) === tmp);
    expect(fileSync).toBeDefined();
    expect(fileSync!.end).toBeLessThan(rename!.start);
    // ...the rename itself reached the disk with the folder's fsync...
    const dirSync = calls.find((c) => c.name === "fsync" && c.ret === 0 && fdPath(c) === folder && c.start > rename!.end);
    expect(dirSync).toBeDefined();
    // ...and only then was anything written to the client's connection (the 201 is the first thing after the rename).
    const toClient = calls.filter((c) => /^writev?$/.test(c.name) && fdPath(c)?.includes(`->127.0.0.1:${answer.localPort}]`));
    const answerWrite = toClient.find((c) => c.start > rename!.end);
    expect(answerWrite).toBeDefined();
    expect(dirSync!.end).toBeLessThan(answerWrite!.start);
  }, 90_000);
});
