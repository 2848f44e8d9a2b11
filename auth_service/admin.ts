// admin.v1.AdminService: operator actions on users, sessions, lock-outs and the audit
// trail. Every call presents ADMIN_API_TOKEN as a bearer; with no token configured every
// call is refused. Each action is audited by the store, in the action's transaction.
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { AdminService } from "../shared/gen/admin/v1/admin_pb.ts";
import { kClientAddress, kRequestId, receivedHeader } from "../shared/connect_server.ts";
import { bearerCredential } from "../shared/bearer.ts";
import { constantTimeEqual, sha256 } from "../shared/crypto.ts";
import { invalidArgument, notFound, unauthenticated } from "../shared/errors.ts";
import { parsePhone } from "../shared/phone.ts";
import { NO_TELEMETRY } from "../shared/telemetry.ts";
import type { Telemetry } from "../shared/telemetry.ts";
import type { AdminStore, AuditContext } from "./ports.ts";

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 200;

const NO_USER = "no user has this phone number";

/** Checks the admin bearer in constant time; with no token configured, nothing passes. */
export function adminGate(token: string | undefined) {
  const expected = token ? sha256(token) : undefined;
  return (authorization: string | null): void => {
    const presented = bearerCredential(authorization);
    // Digests have equal length, so the comparison time says nothing about the token.
    const ok = expected !== undefined && presented !== null &&
      constantTimeEqual(sha256(presented), expected);
    if (!ok) throw unauthenticated("missing or invalid admin API token", "ADMIN_TOKEN_INVALID");
  };
}

/** An opaque cursor: the id of the last event of the previous page. */
export function pageToken(lastId: string): string {
  return btoa(`a:${lastId}`);
}

export function pageCursor(token: string): string | null {
  if (token === "") return null;
  let text: string;
  try {
    text = atob(token);
  } catch {
    throw invalidArgument("page_token is not one this server issued");
  }
  const m = /^a:(\d{1,18})$/.exec(text);
  if (!m) throw invalidArgument("page_token is not one this server issued");
  return m[1]!;
}

export function pageSize(requested: number): number {
  if (requested < 0) throw invalidArgument("page_size must not be negative");
  return requested === 0 ? DEFAULT_PAGE_SIZE : Math.min(requested, MAX_PAGE_SIZE);
}

const iso = (d: Date | null) => d?.toISOString() ?? "";

export function adminRoutes(
  store: AdminStore,
  token: string | undefined,
  telemetry: Telemetry = NO_TELEMETRY,
) {
  const authorize = adminGate(token);
  const begin = (ctx: HandlerContext, phoneInput: string) => {
    authorize(receivedHeader(ctx, "authorization"));
    const phone = parsePhone(phoneInput).e164;
    const who: AuditContext = {
      phone,
      clientAddress: ctx.values.get(kClientAddress),
      requestId: ctx.values.get(kRequestId),
    };
    return { phone, who };
  };
  return (router: ConnectRouter) =>
    router.service(AdminService, {
      async getUser(req, ctx) {
        const { phone, who } = begin(ctx, req.phoneNumber);
        const u = await store.user(phone, who);
        if (!u) throw notFound(NO_USER, "USER_NOT_FOUND");
        return {
          userId: u.id,
          phoneNumber: u.phoneNumber,
          verified: u.verifiedAt !== null,
          createdAt: iso(u.createdAt),
          verifiedAt: iso(u.verifiedAt),
          lockedUntil: iso(u.lockedUntil),
        };
      },
      async listUserSessions(req, ctx) {
        const { phone, who } = begin(ctx, req.phoneNumber);
        const sessions = await store.sessions(phone, who);
        if (!sessions) throw notFound(NO_USER, "USER_NOT_FOUND");
        return {
          sessions: sessions.map((s) => ({
            sessionId: s.id,
            createdAt: iso(s.createdAt),
            lastSeenAt: iso(s.lastSeenAt),
            expiresAt: iso(s.expiresAt),
          })),
        };
      },
      async revokeUserSessions(req, ctx) {
        const { phone, who } = begin(ctx, req.phoneNumber);
        const revoked = await store.revokeSessions(phone, who);
        if (revoked > 0) telemetry.sessionsRevoked("admin", revoked);
        return { revoked };
      },
      async unlockPhoneNumber(req, ctx) {
        const { phone, who } = begin(ctx, req.phoneNumber);
        return { unlocked: await store.unlock(phone, who) };
      },
      async deleteUser(req, ctx) {
        const { phone, who } = begin(ctx, req.phoneNumber);
        if (!(await store.deleteUser(phone, who))) throw notFound(NO_USER, "USER_NOT_FOUND");
        return { deleted: true };
      },
      async listAuditEvents(req, ctx) {
        const { phone, who } = begin(ctx, req.phoneNumber);
        const size = pageSize(req.pageSize);
        // One more than asked tells whether another page follows.
        const rows = await store.auditEvents(phone, pageCursor(req.pageToken), size + 1, who);
        const page = rows.slice(0, size);
        return {
          events: page.map((e) => ({
            eventId: e.id,
            at: iso(e.at),
            event: e.event,
            outcome: e.outcome,
            phoneNumber: e.phoneNumber ?? "",
            clientAddress: e.clientAddress ?? "",
            requestId: e.requestId ?? "",
          })),
          nextPageToken: rows.length > size ? pageToken(page[page.length - 1]!.id) : "",
        };
      },
    });
}
