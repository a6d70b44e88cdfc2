// The master secret every device key, MAC key and operator-token key is derived from: created once, private,
// on disk before it is used; the same for two first starts racing; a damaged or unreadable file is never replaced.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadOrCreateMasterSecret } from "../../server/infra/auth/master-secret";

describe("the master secret", () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "ota-master-"));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("is created once, readable by its owner only, in a folder only its owner enters, and read back after", async () => {
    const data = path.join(dir, "data");
    const first = await loadOrCreateMasterSecret(data);
    expect(first).toMatchObject({ created: true, file: path.join(data, "master.key") });
    expect(first.secret).toHaveLength(32);
    expect(fs.statSync(data).mode & 0o777).toBe(0o700);
    expect(fs.statSync(first.file).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(first.file, "utf8")).toBe(first.secret.toString("hex") + "\n");
    const again = await loadOrCreateMasterSecret(data);
    expect(again.created).toBe(false);
    expect(again.secret.equals(first.secret)).toBe(true);
  });

  it("two first starts at once end with one secret, the one on disk", async () => {
    const [a, b] = await Promise.all([loadOrCreateMasterSecret(dir), loadOrCreateMasterSecret(dir)]);
    expect([a.created, b.created].sort()).toEqual([false, true]);
    expect(a.secret.equals(b.secret)).toBe(true);
    expect(fs.readFileSync(path.join(dir, "master.key"), "utf8").trim()).toBe(a.secret.toString("hex"));
  });

  it("a damaged file is refused with what to do, and left as it is", async () => {
    const file = path.join(dir, "master.key");
    for (const damaged of ["abc\n", "g".repeat(64), "A".repeat(64), "0".repeat(65), ""]) {
      fs.writeFileSync(file, damaged);
      await expect(loadOrCreateMasterSecret(dir)).rejects.toThrow(`${file} is damaged (expected 64 hex characters); restore it from a backup`);
      expect(fs.readFileSync(file, "utf8")).toBe(damaged);
    }
  });

  it("a file that cannot be read is an error, not a reason to make a new secret", async () => {
    fs.mkdirSync(path.join(dir, "master.key"));
    await expect(loadOrCreateMasterSecret(dir)).rejects.toMatchObject({ code: "EISDIR" });
  });
});
