// Thin Connect handlers: read the request, call the use case, shape the reply.
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { AuthService as AuthServiceDesc } from "../shared/gen/auth/v1/auth_pb.ts";
import {
  kClientAddress,
  kClientRequestId,
  kRequestId,
  receivedHeader,
} from "../shared/connect_server.ts";
import type { CallContext, SessionInfo } from "./ports.ts";
import type { AuthUseCases } from "./use_cases.ts";

const SIGNUP_MESSAGE = "Signup successful, OTP will be sent soon";
const PHONE_CHANGE_MESSAGE = "A code was sent to the new number";

function callContext(ctx: HandlerContext): CallContext {
  return {
    requestId: ctx.values.get(kRequestId),
    clientAddress: ctx.values.get(kClientAddress),
    clientRequestId: ctx.values.get(kClientRequestId),
    userAgent: cleanUserAgent(receivedHeader(ctx, "user-agent")),
  };
}

/** Printable and bounded: it is shown back to the user in ListSessions. */
function cleanUserAgent(raw: string | null): string {
  // deno-lint-ignore no-control-regex
  return (raw ?? "").replace(/[\u0000-\u001f\u007f]/g, "").slice(0, 256);
}

const auth = (ctx: HandlerContext) => receivedHeader(ctx, "authorization");

function sessionJson(s: SessionInfo) {
  return {
    sessionId: s.id,
    createdAt: s.createdAt.toISOString(),
    lastSeenAt: s.lastSeenAt.toISOString(),
    expiresAt: s.expiresAt.toISOString(),
  };
}

export function authRoutes(u: AuthUseCases) {
  return (router: ConnectRouter) =>
    router.service(AuthServiceDesc, {
      async signupWithPhoneNumber(req, ctx) {
        await u.codes.signup(req.phoneNumber, callContext(ctx));
        return { message: SIGNUP_MESSAGE };
      },
      async verifyPhoneNumber(req, ctx) {
        return await u.redemption.verify(req.phoneNumber, req.otp, callContext(ctx));
      },
      async loginWithPhoneNumber(req, ctx) {
        return await u.redemption.login(req.phoneNumber, req.otp, callContext(ctx));
      },
      async validatePhoneNumberLogin(req, ctx) {
        return { isValid: await u.codes.validateLogin(req.phoneNumber, callContext(ctx)) };
      },
      async getProfile(req, ctx) {
        const user = await u.sessions.profile(auth(ctx), req.phoneNumber);
        return {
          phoneNumber: user.phoneNumber,
          userId: user.id,
          verified: user.verifiedAt !== null,
          createdAt: user.createdAt.toISOString(),
          verifiedAt: user.verifiedAt?.toISOString() ?? "",
        };
      },
      async logout(req, ctx) {
        return { revoked: await u.sessions.logout(auth(ctx), req.all, callContext(ctx)) };
      },
      async refreshSession(_req, ctx) {
        return await u.sessions.refresh(auth(ctx), callContext(ctx));
      },
      async getSession(_req, ctx) {
        const { session, user } = await u.sessions.authenticate(auth(ctx));
        return { ...sessionJson(session), userId: user.id, phoneNumber: user.phoneNumber };
      },
      async listSessions(_req, ctx) {
        const { current, sessions } = await u.sessions.list(auth(ctx));
        return {
          sessions: sessions.map((s) => ({
            ...sessionJson(s),
            current: s.id === current,
            clientAddress: s.clientAddress,
            userAgent: s.userAgent,
          })),
        };
      },
      async revokeSession(req, ctx) {
        return { revoked: await u.sessions.revokeOne(auth(ctx), req.sessionId, callContext(ctx)) };
      },
      async requestPhoneChange(req, ctx) {
        await u.account.requestPhoneChange(auth(ctx), req.newPhoneNumber, callContext(ctx));
        return { message: PHONE_CHANGE_MESSAGE };
      },
      async confirmPhoneChange(req, ctx) {
        const phoneNumber = await u.account.confirmPhoneChange(
          auth(ctx),
          req.newPhoneNumber,
          req.otp,
          callContext(ctx),
        );
        return { phoneNumber };
      },
      async deleteAccount(req, ctx) {
        await u.account.deleteAccount(auth(ctx), req.otp, callContext(ctx));
        return { deleted: true };
      },
    });
}
