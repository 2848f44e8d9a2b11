// Code and token primitives. Codes and tokens exist in plaintext only in memory,
// on their way to the SMS or the client.
import { timingSafeEqual } from "node:crypto";

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

export function toBase64Url(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

export async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}

/** HMAC-SHA256 keyed once at start; the raw key is not kept. */
export class HmacKey {
  private constructor(private readonly key: CryptoKey) {}

  static async import(secret: string): Promise<HmacKey> {
    const key = await crypto.subtle.importKey(
      "raw",
      encoder.encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    return new HmacKey(key);
  }

  async sign(parts: readonly string[]): Promise<Uint8Array> {
    // NUL separators keep ("ab","c") and ("a","bc") apart; no part may hold a NUL.
    for (const p of parts) if (p.includes("\0")) throw new RangeError("NUL in MAC input");
    const sig = await crypto.subtle.sign("HMAC", this.key, encoder.encode(parts.join("\0")));
    return new Uint8Array(sig);
  }
}

/** The MAC that binds a code to its request, number and purpose (see proto/bus/v1/bus.proto). */
export function otpMac(
  key: HmacKey,
  requestId: string,
  phoneE164: string,
  purpose: string,
  code: string,
): Promise<Uint8Array> {
  return key.sign(["otp.v1", requestId, phoneE164, purpose, code]);
}
