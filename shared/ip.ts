// Client addresses as limits key them: one spelling per address (so "::FFFF:1.2.3.4",
// "1.2.3.4:5678" and "1.2.3.4" are one caller), IPv6 bucketed per /64 (a single host is
// usually given a whole /64, so a full address would let it rotate through 2^64 keys),
// and the proxies allowed to name the client in X-Forwarded-For.
import { remembered } from "./remembered.ts";

/** An address as 4 (IPv4) or 16 (IPv6) bytes; IPv4-mapped IPv6 comes back as IPv4. */
export function parseAddress(raw: string): Uint8Array | null {
  let s = raw.trim();
  if (s.startsWith("[")) {
    // "[v6]" or "[v6]:port"
    const end = s.indexOf("]");
    if (end < 0) return null;
    s = s.slice(1, end);
  } else if (/^[\d.]+:\d+$/.test(s)) {
    s = s.slice(0, s.indexOf(":"));
  }
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  const v4 = parseV4(s);
  if (v4) return v4;
  const v6 = parseV6(s);
  if (!v6) return null;
  const mapped = v6.slice(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
  return mapped ? v6.slice(12) : v6;
}

function parseV4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p.startsWith("0"))) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

function parseV6(s: string): Uint8Array | null {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.length > 45) return null;
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const groups = (h: string): number[] | null => {
    if (h === "") return [];
    const out: number[] = [];
    const parts = h.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseV4(p);
        if (!v4) return null;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...new Array(missing).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 255;
  });
  return out;
}

/** The one spelling of an address (dotted IPv4, RFC 5952 IPv6); "" when it is not one. */
export function canonicalAddress(raw: string): string {
  const b = parseAddress(raw);
  return b ? format(b) : "";
}

function format(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join(".");
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i]! << 8) | b[i + 1]!);
  // The longest run of two or more zero groups becomes "::" (the first, on a tie).
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/**
 * The key a canonical client address is counted under: the IPv4 address itself, an
 * IPv6 address's /64 (as "2001:db8:1:2::/64"), "-" for an unknown address. Kept for the
 * 4,096 latest addresses, as knownAddress keeps spellings: a call asks for its address's
 * key several times (its charge, its lock check, clearing its locks), 2-7 µs a parse.
 */
export const addressKey: (address: string) => string = remembered(4_096, (address) => {
  const b = parseAddress(address);
  if (!b) return "-";
  if (b.length === 4) return format(b);
  const net = new Uint8Array(16);
  net.set(b.slice(0, 8));
  return `${format(net)}/64`;
});

export interface Cidr {
  bytes: Uint8Array;
  prefix: number;
}

/** "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). */
export function parseCidr(raw: string): Cidr | null {
  const [addr, len, ...rest] = raw.trim().split("/");
  if (rest.length > 0 || addr === undefined) return null;
  const bytes = parseAddress(addr);
  if (!bytes || addr.includes("[")) return null;
  const max = bytes.length * 8;
  if (len === undefined) return { bytes, prefix: max };
  if (!/^\d{1,3}$/.test(len)) return null;
  let prefix = Number(len);
  // A mapped IPv4 network ("::ffff:10.0.0.0/104") is kept as the IPv4 network it names.
  if (bytes.length === 4 && addr.includes(":")) prefix -= 96;
  if (prefix < 0 || prefix > max) return null;
  return { bytes, prefix };
}

export function cidrContains(c: Cidr, address: Uint8Array): boolean {
  if (c.bytes.length !== address.length) return false;
  for (let bit = 0; bit < c.prefix; bit += 8) {
    const n = Math.min(8, c.prefix - bit);
    const mask = (0xff << (8 - n)) & 0xff;
    if ((c.bytes[bit / 8]! & mask) !== (address[bit / 8]! & mask)) return false;
  }
  return true;
}

/**
 * The client address of a request: the socket peer, unless the peer is a trusted proxy,
 * then the right-most X-Forwarded-For entry that is not a trusted proxy (each proxy
 * appends the address it saw, so entries further left are whatever the client wrote).
 * Canonical, or "" when no usable address is known.
 */
export function resolveClientAddress(
  peer: string,
  forwardedFor: string | null,
  trusted: readonly Cidr[],
): string {
  const known = knownAddress(peer);
  if (known === null) return "";
  const isTrusted = (b: Uint8Array) => trusted.some((c) => cidrContains(c, b));
  if (trusted.length === 0 || forwardedFor === null || !isTrusted(known.bytes)) {
    return known.text;
  }
  const chain = forwardedFor.split(",");
  for (let i = chain.length - 1; i >= 0; i--) {
    const hop = knownAddress(chain[i]!);
    // An entry a trusted proxy wrote that is not an address: nothing left of it is sure.
    if (hop === null) return known.text;
    if (!isTrusted(hop.bytes)) return hop.text;
  }
  // Every hop is a proxy of ours: the left-most is as close to the client as we know.
  return knownAddress(chain[0]!)?.text ?? known.text;
}

interface KnownAddress {
  readonly bytes: Uint8Array;
  readonly text: string;
}

/**
 * An address as written, parsed and spelled once: every request names its peer, and a
 * keep-alive connection or a proxy sends many from the same one. At most 4,096 are kept,
 * so a stream of distinct forwarded addresses costs a parse each and nothing more.
 */
const knownAddress = remembered(4_096, (raw): KnownAddress | null => {
  const bytes = parseAddress(raw);
  return bytes ? { bytes, text: format(bytes) } : null;
});
