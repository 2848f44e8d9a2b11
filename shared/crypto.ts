// Code and token primitives. Codes and tokens exist in plaintext only in memory,
// on their way to the SMS or the client.
import { createHmac, createSecretKey, hash, timingSafeEqual } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { Buffer } from "node:buffer";

const encoder = new TextEncoder();

/** A uniformly random decimal code of `digits` digits, by rejection sampling (no modulo bias). */
export function randomCode(digits = 6): string {
  if (digits < 4 || digits > 9) throw new RangeError("digits must be 4..9");
  const range = 10 ** digits;
  // Largest multiple of range below 2^32: values at or above it are rejected.
  const limit = Math.floor(0x1_0000_0000 / range) * range;
  const buf = new Uint32Array(1);
  for (;;) {
    crypto.getRandomValues(buf);
    const v = buf[0]!;
    if (v < limit) return String(v % range).padStart(digits, "0");
  }
}

/** An opaque 256-bit token, base64url without padding. */
export function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return toBase64Url(bytes);
}

/** Base64url without padding, of bytes or of a string's UTF-8. */
export function toBase64Url(data: Uint8Array | string): string {
  const b = typeof data === "string"
    ? Buffer.from(data)
    : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return b.toString("base64url");
}

// node:crypto hashes in the calling thread: WebCrypto's digest and sign hand every call
// to a worker thread and back, which costs more than the hash of a token itself.
// The one-shot hash() is cheaper than createHash().update().digest() (3 against 5 µs for
// a session token here).
export function sha256(text: string): Uint8Array {
  const b = hash("sha256", text, "buffer");
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}

/** HMAC-SHA256 keyed once at start; the raw key is kept only inside an opaque key object. */
export class HmacKey {
  private constructor(private readonly key: KeyObject) {}

  static import(secret: string): HmacKey {
    return HmacKey.fromBytes(encoder.encode(secret));
  }

  static fromBytes(raw: Uint8Array): HmacKey {
    return new HmacKey(createSecretKey(raw));
  }

  sign(parts: readonly string[]): Uint8Array<ArrayBuffer> {
    // NUL separators keep ("ab","c") and ("a","bc") apart; no part may hold a NUL.
    for (const p of parts) if (p.includes("\0")) throw new RangeError("NUL in MAC input");
    return new Uint8Array(createHmac("sha256", this.key).update(parts.join("\0")).digest());
  }
}

/** A key of its own for one use, derived from a secret: HMAC(secret, label). */
export function derivedHmacKey(secret: string, label: string): HmacKey {
  return HmacKey.fromBytes(HmacKey.import(secret).sign(["derive.v1", label]));
}

/**
 * The code of a challenge, like HOTP: HMAC(key, challenge id) read as 32-bit words, the
 * first below the largest multiple of 10^digits taken (no modulo bias). Nothing secret
 * is stored, and every resend of the challenge carries the same code.
 */
export function challengeCode(key: HmacKey, challengeId: string, digits = 6): string {
  if (digits < 4 || digits > 9) throw new RangeError("digits must be 4..9");
  const range = 10 ** digits;
  const limit = Math.floor(0x1_0000_0000 / range) * range;
  for (let block = 0;; block++) {
    const mac = key.sign(["otp.v1 code", challengeId, String(block)]);
    const view = new DataView(mac.buffer, mac.byteOffset, mac.byteLength);
    for (let i = 0; i + 4 <= mac.length; i += 4) {
      const v = view.getUint32(i);
      if (v < limit) return String(v % range).padStart(digits, "0");
    }
  }
}

export interface MacInput {
  /** Equal on every resend of one code. */
  challengeId: string;
  phone: string;
  purpose: string;
  /** Bound to the second, so the receiver can rely on it. */
  expiresAt: Date;
  code: string;
}

/** The MAC that binds a code to its challenge, number, purpose and expiry (see proto/bus/v1/bus.proto). */
export function otpMac(key: HmacKey, m: MacInput): Uint8Array {
  const expires = String(Math.floor(m.expiresAt.getTime() / 1000));
  return key.sign(["otp.v2", m.challengeId, m.phone, m.purpose, expires, m.code]);
}
