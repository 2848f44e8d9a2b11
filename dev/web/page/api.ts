// What the page needs besides the DOM: the auth-service client, where the session is
// kept, and how an error reads to a person.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { CallOptions, Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "../../../shared/gen/auth/v1/auth_pb.ts";
import { ErrorInfoSchema } from "../../../shared/gen/google/rpc/error_details_pb.ts";

export type Auth = Client<typeof AuthService>;

/** The page is served by auth-service itself, so its origin is the API's origin. */
export function authClient(baseUrl = location.origin): Auth {
  // JSON rather than binary: every request and reply is readable in the browser's
  // network tab, which is the point of a page for trying the API.
  return createClient(AuthService, createConnectTransport({ baseUrl, useBinaryFormat: false }));
}

export interface StoredSession {
  token: string;
  phoneNumber: string;
  /** The last access token issued to this session, shown with its claims. */
  accessToken?: string;
}

// The session token is kept in sessionStorage, not in memory alone and never in
// localStorage: it survives a reload of this tab (a newcomer reloading the page stays
// signed in), is not shared with other tabs and is dropped when the tab closes. Any
// script on the page could read it wherever it is kept, so the page loads nothing but
// its own script (see the Content-Security-Policy in ../assets.ts).
const KEY = "phone-auth.session";

export const sessionStore = {
  load(): StoredSession | undefined {
    try {
      const v = JSON.parse(sessionStorage.getItem(KEY) ?? "null");
      const ok = typeof v?.token === "string" && typeof v?.phoneNumber === "string" &&
        (v.accessToken === undefined || typeof v.accessToken === "string");
      return ok ? v : undefined;
    } catch {
      return undefined;
    }
  },
  save(s: StoredSession): void {
    sessionStorage.setItem(KEY, JSON.stringify(s));
  },
  clear(): void {
    sessionStorage.removeItem(KEY);
  },
};

export function bearer(s: StoredSession): CallOptions {
  return { headers: { authorization: `Bearer ${s.token}` } };
}

/** The Connect wire name of a code, as the server sends it: `invalid_argument`. */
export function codeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i: number) => (i ? "_" : "") + c.toLowerCase());
}

/** Whether `err` is a Connect error with this code. */
export function hasCode(err: unknown, code: Code): boolean {
  return err instanceof ConnectError && err.code === code;
}

/** The machine-readable reason auth-service puts in an ErrorInfo detail, if any. */
export function reasonOf(err: ConnectError): string | undefined {
  return err.findDetails(ErrorInfoSchema)[0]?.reason || undefined;
}

/**
 * One line for the error region: the Connect code, the reason a program would branch
 * on, the server's message, and a hint: `already_exists (ALREADY_REGISTERED): …`.
 */
export function describeError(err: unknown): string {
  const e = ConnectError.from(err);
  const reason = reasonOf(e);
  let text = `${codeName(e.code)}${reason ? ` (${reason})` : ""}: ${e.rawMessage || "no message"}`;
  const retry = e.metadata.get("retry-after");
  if (e.code === Code.ResourceExhausted && retry && !text.includes("retry in")) {
    text += ` (retry in ${retry}s)`;
  }
  // fetch itself failed: nothing answered, which connect-web reports as `unknown`.
  if (e.code === Code.Unknown) {
    text += " — is `deno task dev` still running?";
  }
  return text;
}
