// `ota keys` and `ota sign` / `ota verify`: Secure Boot v2 signing keys and signatures, offline. They need no
// server, no login and no OTA_* environment; the private key only ever leaves its file to sign. The format and
// the signing itself are in server/esp (signature.ts, signing.ts).
import { randomBytes, type KeyObject } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Command, InvalidArgumentError } from "commander";
import {
  appImageLength,
  assembleSignedImage,
  blockFromDetachedSignature,
  checkSignature,
  generateSigningKey,
  ImageError,
  parseAppImage,
  parseSignatureSector,
  prepareImage,
  publicKeyDigest,
  readKey,
  SIGNATURE_SCHEMES,
  SignatureKeyError,
  signImage,
  SigningError,
  type SignatureScheme,
  type TrustedKey,
} from "../esp";
import { CliError, EXIT, UsageError } from "./errors";

/** No ESP32 app image comes near this; anything larger is not one. */
const MAX_IMAGE_FILE = 64 * 1024 * 1024;
const MAX_KEY_FILE = 64 * 1024;

const note = (t: string) => void process.stderr.write(`ota: ${t}\n`);
const out = (t: string) => void process.stdout.write(t + "\n");

function readBounded(file: string, max: number, what: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    throw new UsageError(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size > max) throw new UsageError(`${what} ${file} is ${size} bytes, more than the ${max} a ${what} can be`);
    const buf = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const n = fs.readSync(fd, buf, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    fs.closeSync(fd);
  }
}

function loadKey(file: string, need: "private" | "any"): KeyObject {
  let key: KeyObject;
  try {
    key = readKey(readBounded(file, MAX_KEY_FILE, "key file"));
  } catch (e) {
    if (e instanceof SignatureKeyError) throw new UsageError(`${file}: ${e.message}`);
    throw e;
  }
  if (need === "private" && key.type !== "private") {
    throw new UsageError(`${file} is a public key; --key needs the private signing key (or sign remotely: --digest-only, then --public-key with --signature)`);
  }
  return key;
}

function keyDigest(file: string, key: KeyObject): Buffer {
  try {
    return publicKeyDigest(key);
  } catch (e) {
    if (e instanceof SignatureKeyError) throw new UsageError(`${file}: ${e.message}`);
    throw e;
  }
}

/** Writes by rename from a synced temporary file beside it, then syncs the folder: all or nothing, durably. */
function publish(file: string, data: Buffer | string, mode: number): void {
  const target = path.resolve(file);
  const dir = path.dirname(target);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(target)}.tmp-${randomBytes(6).toString("hex")}`);
  const fd = fs.openSync(tmp, "wx", mode);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, target);
  syncDir(dir);
}

function syncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Creates a file that must not exist yet (a key is never overwritten), synced. */
function create(file: string, data: string, mode: number): void {
  const fd = fs.openSync(file, "wx", mode);
  try {
    fs.fchmodSync(fd, mode);
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Where `ota keys generate --out KEY.pem` puts the public key: KEY.pub.pem. */
function publicKeyPath(privateKeyFile: string): string {
  return privateKeyFile.endsWith(".pem") ? `${privateKeyFile.slice(0, -4)}.pub.pem` : `${privateKeyFile}.pub.pem`;
}

function scheme(value: string): SignatureScheme {
  if (!(SIGNATURE_SCHEMES as readonly string[]).includes(value)) throw new InvalidArgumentError(`must be one of ${SIGNATURE_SCHEMES.join(", ")}`);
  return value as SignatureScheme;
}
const collect = (v: string, prev: string[] = []) => prev.concat(v);

/** SigningError and ImageError as the CLI reports them. */
function asCliError(file: string, e: unknown): unknown {
  if (e instanceof SigningError) return new CliError(`${file}: ${e.message}`, e.code === "signature_mismatch" ? EXIT.signature : EXIT.usage);
  if (e instanceof ImageError) return new UsageError(`${file} is not a valid ESP-IDF app image (${e.code}): ${e.message}`);
  if (e instanceof SignatureKeyError) return new UsageError(e.message);
  return e;
}

interface SignOptions {
  key?: string[];
  out?: string;
  append?: boolean;
  digestOnly?: boolean;
  publicKey?: string;
  signature?: string;
}

function signCommand(app: string, opts: SignOptions): void {
  const keys = opts.key ?? [];
  const remote = opts.publicKey !== undefined || opts.signature !== undefined;
  if (opts.digestOnly && (keys.length || remote)) throw new UsageError("--digest-only takes no key or signature: it prints what to sign");
  if (keys.length && remote) throw new UsageError("sign with --key, or assemble with --public-key and --signature, not both");
  if (remote && !(opts.publicKey && opts.signature)) throw new UsageError("--public-key and --signature go together");
  if (!opts.digestOnly && !keys.length && !remote) throw new UsageError("say how to sign: --key KEY.pem, or --digest-only then --public-key PUB.pem --signature SIG");
  if (!opts.digestOnly && !opts.out) throw new UsageError("--out <file> is required: where to write the signed image");

  const file = readBounded(app, MAX_IMAGE_FILE, "image");
  const privateKeys = keys.map((k) => {
    const key = loadKey(k, "private");
    keyDigest(k, key); // refuses, naming the file, a key Secure Boot v2 cannot use
    return key;
  });
  const publicKey = opts.publicKey ? loadKey(opts.publicKey, "any") : undefined;
  if (opts.publicKey && publicKey) keyDigest(opts.publicKey, publicKey);
  const signature = opts.signature ? readBounded(opts.signature, MAX_KEY_FILE, "signature file") : undefined;
  let signed: Buffer;
  try {
    if (opts.digestOnly) {
      const { digest } = prepareImage(file, { append: opts.append });
      out(digest.toString("hex"));
      if (opts.out) {
        publish(opts.out, digest, 0o644);
        note(`wrote the 32-byte digest to ${path.resolve(opts.out)}`);
      }
      return;
    }
    if (publicKey && signature) {
      const prepared = prepareImage(file, { append: opts.append });
      signed = assembleSignedImage(prepared, [blockFromDetachedSignature(prepared, publicKey, signature)]);
    } else {
      signed = signImage(file, privateKeys, { append: opts.append });
    }
  } catch (e) {
    throw asCliError(app, e);
  }
  publish(opts.out!, signed, 0o644);
  const sector = parseSignatureSector(signed, appImageLength(signed));
  const n = sector.blocks.length;
  note(`wrote ${path.resolve(opts.out!)} (${signed.length} bytes, ${n} signature block${n === 1 ? "" : "s"} over digest ${sector.digest})`);
}

function verifyCommand(image: string, opts: { key: string[] }): void {
  const file = readBounded(image, MAX_IMAGE_FILE, "image");
  const trusted: TrustedKey[] = opts.key.map((k) => ({ digest: keyDigest(k, loadKey(k, "any")), name: k }));
  let imageLength: number;
  try {
    imageLength = appImageLength(file);
  } catch (e) {
    throw asCliError(image, e);
  }
  const sector = parseSignatureSector(file, imageLength);
  if (sector.sectorOffset !== null) out(`signature sector at ${sector.sectorOffset}, image digest ${sector.digest}`);
  for (const b of sector.blocks) {
    const facts = b.problem
      ? `malformed: ${b.problem.code}`
      : `crc ${b.crcOk ? "ok" : "bad"}, digest ${b.digestOk ? "matches" : "does not match"}, signature ${b.signatureOk ? "valid" : "invalid"}`;
    out(`block ${b.index}: ${b.scheme ?? `version 0x${b.version.toString(16)}`}${b.keyDigest ? `, key digest ${b.keyDigest}` : ""}, ${facts}`);
  }
  const check = checkSignature(sector, trusted);
  if (!check.ok) throw new CliError(`${image} is not verified (${check.code}): ${check.message}`, EXIT.signature);
  // The signature covers the whole image; a signed image that is itself damaged was signed that way.
  try {
    parseAppImage(file);
  } catch (e) {
    if (e instanceof ImageError) throw new CliError(`${image}: the signature holds, but the image itself is not valid (${e.code}): ${e.message}`, EXIT.signature);
    throw e;
  }
  out(`verified: block ${check.block.index} (${check.block.scheme}) is signed by ${check.signer.name}`);
}

export function addSigningCommands(program: Command): void {
  const keys = program.command("keys").description("Secure Boot v2 signing keys (offline: no server needed)");
  keys
    .command("generate")
    .description("make a signing key pair: KEY.pem (private, mode 0600) and KEY.pub.pem beside it (public, for servers and devices)")
    .requiredOption("--scheme <scheme>", `the signature scheme: ${SIGNATURE_SCHEMES.join(" or ")}`, scheme)
    .requiredOption("--out <file>", "the private key file to create (never overwritten)")
    .action((opts: { scheme: SignatureScheme; out: string }) => {
      const privateFile = path.resolve(opts.out);
      const publicFile = publicKeyPath(privateFile);
      for (const f of [privateFile, publicFile]) {
        if (fs.existsSync(f)) throw new UsageError(`${f} already exists; a key is never overwritten: choose another --out`);
      }
      const pair = generateSigningKey(opts.scheme);
      fs.mkdirSync(path.dirname(privateFile), { recursive: true });
      create(privateFile, pair.privateKeyPem, 0o600);
      create(publicFile, pair.publicKeyPem, 0o644);
      syncDir(path.dirname(privateFile));
      note(`wrote ${privateFile} (${opts.scheme} private key, mode 0600: keep it offline) and ${publicFile} (public key)`);
      out(keyDigest(publicFile, readKey(pair.publicKeyPem)).toString("hex"));
    });
  keys
    .command("digest")
    .description("print the key digest ESP-IDF burns into eFuse (espsecure.py digest_sbv2_public_key), in hex")
    .argument("<key>", "a public key (or the private key) in PEM")
    .option("--out <file>", "also write the 32 raw bytes, for espefuse.py burn_key ... SECURE_BOOT_DIGEST0")
    .action((file: string, opts: { out?: string }) => {
      const digest = keyDigest(file, loadKey(file, "any"));
      out(digest.toString("hex"));
      if (opts.out) {
        publish(opts.out, digest, 0o644);
        note(`wrote ${path.resolve(opts.out)}`);
      }
    });

  program
    .command("sign")
    .description("sign an app image with Secure Boot v2 signature blocks, as espsecure.py sign_data --version 2 does (offline)")
    .argument("<app>", "the app image the build produced (build/<project>.bin)")
    .option("--key <file>", "a private signing key (PEM); repeat for up to 3 blocks", collect)
    .option("--out <file>", "where to write the signed image (with --digest-only: the raw 32-byte digest)")
    .option("--append", "add blocks to an image that is already signed (up to 3 in all)")
    .option("--digest-only", "print the SHA-256 (hex) a remote signer must sign, and sign nothing")
    .option("--public-key <file>", "with --signature: the public key (PEM) of the remote signer")
    .option("--signature <file>", "a detached signature over the digest: RSA 384 bytes big-endian; ECDSA DER or 64 bytes r||s")
    .action((app: string, opts: SignOptions) => signCommand(app, opts));

  program
    .command("verify")
    .description("check that a signed app image has a signature block that verifies under one of the keys (exit 0 only then)")
    .argument("<image>", "the signed app image")
    .requiredOption("--key <file>", "a trusted public key (PEM); repeat to trust several", collect)
    .action((image: string, opts: { key: string[] }) => verifyCommand(image, opts));
}
