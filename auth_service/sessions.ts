// Using a session: GetProfile (the session's own user only) and Logout (this session or
// all of its user's). Sessions are looked up by the SHA-256 of their bearer token.
import { bearerCredential } from "../shared/bearer.ts";
import { sha256 } from "../shared/crypto.ts";
import { permissionDenied, unauthenticated } from "../shared/errors.ts";
import { parsePhone } from "../shared/phone.ts";
import { NO_TELEMETRY } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import type { AuthSettings, AuthStore, CallContext, User } from "./ports.ts";
import { auditContext } from "./rules.ts";

const TOKEN = /^[A-Za-z0-9_-]{43}$/;
const NO_SESSION = "session is missing, expired or revoked";

export class Sessions {
  constructor(
    private readonly store: AuthStore,
    private readonly settings: AuthSettings,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {}

  /** The user of the session the Authorization header names, refreshing its idle timer. */
  async authenticate(authorization: string | null): Promise<User> {
    const user = await this.store.sessionUser(
      await tokenHash(authorization),
      this.settings.sessionIdleSeconds,
    );
    if (!user) throw unauthenticated(NO_SESSION, "SESSION_INVALID");
    return user;
  }

  async profile(authorization: string | null, phoneInput: string): Promise<User> {
    const user = await this.authenticate(authorization);
    const phone = parsePhone(phoneInput).e164;
    if (user.phoneNumber !== phone) {
      throw permissionDenied("this session may only read its own profile", "NOT_OWN_PROFILE");
    }
    return user;
  }

  /** Revokes the session (or all of its user's); returns how many were revoked. */
  async logout(authorization: string | null, all: boolean, ctx: CallContext): Promise<number> {
    const n = await this.store.revoke(await tokenHash(authorization), all, auditContext(null, ctx));
    if (n === 0) throw unauthenticated(NO_SESSION, "SESSION_INVALID");
    this.telemetry.sessionsRevoked("logout", n);
    return n;
  }
}

async function tokenHash(authorization: string | null): Promise<Uint8Array> {
  const token = bearerCredential(authorization);
  if (token === null || !TOKEN.test(token)) {
    throw unauthenticated("missing or malformed bearer token", "SESSION_INVALID");
  }
  return await sha256(token);
}
