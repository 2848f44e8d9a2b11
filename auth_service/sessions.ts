// Using a session: GetProfile (the session's own user only), Logout, RefreshSession,
// GetSession, ListSessions and RevokeSession. Sessions are looked up by the SHA-256 of
// their bearer token, and only a live one (not revoked, expired or idle) may act.
import { bearerCredential } from "../shared/bearer.ts";
import { randomToken, sha256 } from "../shared/crypto.ts";
import { invalidArgument, permissionDenied, unauthenticated } from "../shared/errors.ts";
import { isUuid } from "../shared/messages.ts";
import { parsePhone } from "../shared/phone.ts";
import { NO_TELEMETRY } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import type {
  AuthSettings,
  AuthStore,
  CallContext,
  Caller,
  SessionInfo,
  SessionPolicy,
  TokenIssuer,
  User,
} from "./ports.ts";
import type { OpenedSession } from "./redemption.ts";
import { auditContext } from "./rules.ts";

const TOKEN = /^[A-Za-z0-9_-]{43}$/;
const NO_SESSION = "session is missing, expired or revoked";

export class Sessions {
  private readonly policy: SessionPolicy;

  constructor(
    private readonly store: AuthStore,
    settings: AuthSettings,
    private readonly tokens: TokenIssuer,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {
    this.policy = {
      idleSeconds: settings.sessionIdleSeconds,
      graceSeconds: settings.sessionRotationGraceSeconds,
    };
  }

  /** The live session the Authorization header names and its user. */
  async authenticate(authorization: string | null): Promise<Caller> {
    const caller = await this.store.authenticate(tokenHash(authorization), this.policy);
    if (!caller) throw unauthenticated(NO_SESSION, "SESSION_INVALID");
    return caller;
  }

  async profile(authorization: string | null, phoneInput: string): Promise<User> {
    const { user } = await this.authenticate(authorization);
    const phone = parsePhone(phoneInput).e164;
    if (user.phoneNumber !== phone) {
      throw permissionDenied("this session may only read its own profile", "NOT_OWN_PROFILE");
    }
    return user;
  }

  /** Revokes the session (or all of its user's); returns how many were revoked. */
  async logout(authorization: string | null, all: boolean, ctx: CallContext): Promise<number> {
    const { session, user } = await this.authenticate(authorization);
    const ids = await this.store.revokeSessions(
      user.id,
      all ? "all" : [session.id],
      "logout",
      auditContext(user.phoneNumber, ctx),
    );
    // Revoked by a concurrent call between the two statements: it is no session now.
    if (ids.length === 0) throw unauthenticated(NO_SESSION, "SESSION_INVALID");
    this.telemetry.sessionsRevoked("logout", ids.length);
    return ids.length;
  }

  /**
   * Rotates the session token and issues a fresh access token. A replaced token within
   * the grace gets a token of its own for the same session, so two tabs refreshing at
   * once both carry on; after the grace it is taken as stolen and the session ends.
   */
  async refresh(authorization: string | null, ctx: CallContext): Promise<OpenedSession> {
    const presented = tokenHash(authorization);
    const sessionToken = randomToken();
    const outcome = await this.store.refresh(
      presented,
      sha256(sessionToken),
      this.policy,
      auditContext(null, ctx),
    );
    if (outcome.kind === "reused") this.telemetry.sessionsRevoked("token_reuse", 1);
    if (outcome.kind !== "rotated") throw unauthenticated(NO_SESSION, "SESSION_INVALID");
    const { session, user } = outcome.caller;
    const access = await this.tokens.issue({
      userId: user.id,
      sessionId: session.id,
      phoneNumber: user.phoneNumber,
    });
    return { sessionToken, accessToken: access.token, expiresIn: access.expiresIn };
  }

  /** The caller's user's live sessions, and which of them is the caller. */
  async list(authorization: string | null): Promise<{ current: string; sessions: SessionInfo[] }> {
    const { session, user } = await this.authenticate(authorization);
    const sessions = await this.store.listSessions(user.id, this.policy.idleSeconds);
    return { current: session.id, sessions };
  }

  /**
   * Ends one of the caller's user's sessions. Another user's session id is answered
   * exactly like an unknown one (0 revoked), so ids reveal nothing.
   */
  async revokeOne(
    authorization: string | null,
    sessionId: string,
    ctx: CallContext,
  ): Promise<number> {
    if (!isUuid(sessionId)) throw invalidArgument("session_id must be a session's UUID");
    const { user } = await this.authenticate(authorization);
    const ids = await this.store.revokeSessions(
      user.id,
      [sessionId.toLowerCase()],
      "revoked_by_user",
      auditContext(user.phoneNumber, ctx),
    );
    if (ids.length > 0) this.telemetry.sessionsRevoked("revoked_by_user", ids.length);
    return ids.length;
  }
}

function tokenHash(authorization: string | null): Uint8Array {
  const token = bearerCredential(authorization);
  if (token === null || !TOKEN.test(token)) {
    throw unauthenticated("missing or malformed bearer token", "SESSION_INVALID");
  }
  return sha256(token);
}
