// Signature checks over a digest that is given, not computed: node:crypto (OpenSSL's EVP_DigestVerify) always
// hashes the message itself, so it can check a Secure Boot v2 signature only over the image bytes. A block also
// carries the digest it was made for; when that no longer matches the image, these tell whether the signature
// at least holds over the block's own digest (the image was changed after signing) or is broken too. They never
// decide whether an image is accepted: a block whose digest does not match is refused either way.
//
// RSA-PSS: OpenSSL does the public-key operation (publicDecrypt without padding) and this file checks the
// EMSA-PSS encoding (RFC 8017 §9.1.2). ECDSA P-256: SEC 1 §4.1.4 verification in BigInt arithmetic on
// public values only (no secret is involved, so timing does not matter).
import { constants, createHash, publicDecrypt, type KeyObject } from "node:crypto";

const SHA256_LEN = 32;

function mgf1Sha256(seed: Buffer, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let counter = 0, pos = 0; pos < length; counter++) {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    pos += createHash("sha256").update(seed).update(c).digest().copy(out, pos);
  }
  return out;
}

/** RSASSA-PSS (SHA-256, MGF1-SHA-256, `saltLength`-byte salt) over a SHA-256 digest; `signature` big-endian. */
export function verifyRsaPssPrehashed(key: KeyObject, modulusBits: number, digest: Buffer, signature: Buffer, saltLength: number): boolean {
  let em: Buffer;
  try {
    em = publicDecrypt({ key, padding: constants.RSA_NO_PADDING }, signature);
  } catch {
    return false; // e.g. the signature is not smaller than the modulus
  }
  const emBits = modulusBits - 1;
  const emLen = Math.ceil(emBits / 8);
  // publicDecrypt returns the modulus length; the encoded message is its last emLen bytes.
  if (em.length < emLen || em.subarray(0, em.length - emLen).some((b) => b !== 0)) return false;
  em = em.subarray(em.length - emLen);
  if (emLen < SHA256_LEN + saltLength + 2 || em[emLen - 1] !== 0xbc) return false;
  const maskedDb = em.subarray(0, emLen - SHA256_LEN - 1);
  const h = em.subarray(emLen - SHA256_LEN - 1, emLen - 1);
  const topBits = 8 * emLen - emBits;
  const topMask = (0xff << (8 - topBits)) & 0xff;
  if ((maskedDb[0]! & topMask) !== 0) return false;
  const db = mgf1Sha256(h, maskedDb.length);
  for (let i = 0; i < db.length; i++) db[i]! ^= maskedDb[i]!;
  db[0]! &= ~topMask & 0xff;
  const psEnd = emLen - SHA256_LEN - saltLength - 2;
  if (db.subarray(0, psEnd).some((b) => b !== 0) || db[psEnd] !== 0x01) return false;
  const salt = db.subarray(db.length - saltLength);
  const hPrime = createHash("sha256").update(Buffer.alloc(8)).update(digest).update(salt).digest();
  return hPrime.equals(h);
}

// NIST P-256 (SEC 2 secp256r1).
const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const GX = 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n;
const GY = 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n;

/** A point in Jacobian coordinates (X/Z², Y/Z³); Z = 0 is the point at infinity. */
interface Jacobian {
  x: bigint;
  y: bigint;
  z: bigint;
}
const INFINITY: Jacobian = { x: 1n, y: 1n, z: 0n };

const mod = (a: bigint, m: bigint) => {
  const r = a % m;
  return r < 0n ? r + m : r;
};

function invert(a: bigint, m: bigint): bigint {
  let [r0, r1] = [mod(a, m), m];
  let [s0, s1] = [1n, 0n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  if (r0 !== 1n) throw new RangeError("not invertible");
  return mod(s0, m);
}

// dbl-2001-b (a = -3)
function double(p: Jacobian): Jacobian {
  if (p.z === 0n || p.y === 0n) return INFINITY;
  const delta = mod(p.z * p.z, P);
  const gamma = mod(p.y * p.y, P);
  const beta = mod(p.x * gamma, P);
  const alpha = mod(3n * (p.x - delta) * (p.x + delta), P);
  const x = mod(alpha * alpha - 8n * beta, P);
  const z = mod((p.y + p.z) * (p.y + p.z) - gamma - delta, P);
  const y = mod(alpha * (4n * beta - x) - 8n * gamma * gamma, P);
  return { x, y, z };
}

// add-2007-bl
function add(p: Jacobian, q: Jacobian): Jacobian {
  if (p.z === 0n) return q;
  if (q.z === 0n) return p;
  const z1z1 = mod(p.z * p.z, P);
  const z2z2 = mod(q.z * q.z, P);
  const u1 = mod(p.x * z2z2, P);
  const u2 = mod(q.x * z1z1, P);
  const s1 = mod(p.y * q.z * z2z2, P);
  const s2 = mod(q.y * p.z * z1z1, P);
  if (u1 === u2) return s1 === s2 ? double(p) : INFINITY;
  const h = mod(u2 - u1, P);
  const i = mod(4n * h * h, P);
  const j = mod(h * i, P);
  const r = mod(2n * (s2 - s1), P);
  const v = mod(u1 * i, P);
  const x = mod(r * r - j - 2n * v, P);
  const y = mod(r * (v - x) - 2n * s1 * j, P);
  const z = mod(((p.z + q.z) * (p.z + q.z) - z1z1 - z2z2) * h, P);
  return { x, y, z };
}

/** a·A + b·B (Shamir's trick). */
function twoMultiply(a: bigint, pa: Jacobian, b: bigint, pb: Jacobian): Jacobian {
  const both = add(pa, pb);
  let acc = INFINITY;
  for (let bit = 255n; bit >= 0n; bit--) {
    acc = double(acc);
    const ba = (a >> bit) & 1n;
    const bb = (b >> bit) & 1n;
    if (ba && bb) acc = add(acc, both);
    else if (ba) acc = add(acc, pa);
    else if (bb) acc = add(acc, pb);
  }
  return acc;
}

const toBig = (b: Buffer) => (b.length ? BigInt(`0x${b.toString("hex")}`) : 0n);

/**
 * ECDSA P-256 over a 32-byte digest. `x`, `y`, `r`, `s` big-endian, 32 bytes each; the point must already be
 * known to lie on the curve (node:crypto checks that when the block's key is imported).
 */
export function verifyP256Prehashed(x: Buffer, y: Buffer, digest: Buffer, r: Buffer, s: Buffer): boolean {
  const rn = toBig(r);
  const sn = toBig(s);
  if (rn < 1n || rn >= N || sn < 1n || sn >= N || digest.length !== SHA256_LEN) return false;
  const e = toBig(digest) % N;
  const w = invert(sn, N);
  const sum = twoMultiply(mod(e * w, N), { x: GX, y: GY, z: 1n }, mod(rn * w, N), { x: toBig(x), y: toBig(y), z: 1n });
  if (sum.z === 0n) return false;
  const zInv = invert(sum.z, P);
  const affineX = mod(sum.x * zInv * zInv, P);
  return affineX % N === rn;
}
