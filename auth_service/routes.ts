// Thin Connect handlers: read the request, call the use case, shape the reply.
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { AuthService as AuthServiceDesc } from "../shared/gen/auth/v1/auth_pb.ts";
import { kClientAddress, kClientRequestId, kRequestId } from "../shared/connect_server.ts";
import type { CallContext } from "./ports.ts";
import type { AuthUseCases } from "./use_cases.ts";

const SIGNUP_MESSAGE = "Signup successful, OTP will be sent soon";

function callContext(ctx: HandlerContext): CallContext {
  return {
    requestId: ctx.values.get(kRequestId),
    clientAddress: ctx.values.get(kClientAddress),
    clientRequestId: ctx.values.get(kClientRequestId),
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
        const sessionToken = await u.redemption.verify(req.phoneNumber, req.otp, callContext(ctx));
        return { sessionToken };
      },
      async loginWithPhoneNumber(req, ctx) {
        const sessionToken = await u.redemption.login(req.phoneNumber, req.otp, callContext(ctx));
        return { sessionToken };
      },
      async validatePhoneNumberLogin(req, ctx) {
        return { isValid: await u.codes.validateLogin(req.phoneNumber, callContext(ctx)) };
      },
      async getProfile(req, ctx) {
        const authorization = ctx.requestHeader.get("authorization");
        const user = await u.sessions.profile(authorization, req.phoneNumber);
        return {
          phoneNumber: user.phoneNumber,
          userId: user.id,
          verified: user.verifiedAt !== null,
          createdAt: user.createdAt.toISOString(),
          verifiedAt: user.verifiedAt?.toISOString() ?? "",
        };
      },
      async logout(req, ctx) {
        const authorization = ctx.requestHeader.get("authorization");
        return { revoked: await u.sessions.logout(authorization, req.all, callContext(ctx)) };
      },
    });
}
