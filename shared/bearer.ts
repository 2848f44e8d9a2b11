// The one parser of `Authorization: Bearer <credential>` headers.

/** The credential of a well-formed bearer header, or null for anything else. */
export function bearerCredential(header: string | null): string | null {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  return m ? m[1]! : null;
}
