// Unique names for what each test stack creates (databases, vhosts, secrets).

/** `bytes` random bytes as lowercase hex. */
export function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** A name no other test uses, safe as a database or vhost name. */
export function uniqueName(prefix = "test"): string {
  return `${prefix}_${randomHex(6)}`;
}
