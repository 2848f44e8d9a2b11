// Thin Connect handlers: read the request, call the domain, shape the reply.
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { AuthService as AuthServiceDesc } from "../shared/gen/auth/v1/auth_pb.ts";
import { kClientAddress, kRequestId } from "../shared/connect_server.ts";
import type { AuthService, CallContext } from "./service.ts";

const SIGNUP_MESSAGE = "Signup successful, OTP will be sent soon";

function callContext(ctx: HandlerContext): CallContext {
  return { requestId: ctx.values.get(kRequestId), clientAddress: ctx.values.get(kClientAddress) };
}

export function authRoutes(service: AuthService) {
  return (router: ConnectRouter) =>
    router.service(AuthServiceDesc, {
      async signupWithPhoneNumber(req, ctx) {
        await service.signup(req.phoneNumber, callContext(ctx));
        return { message: SIGNUP_MESSAGE };
      },
      async verifyPhoneNumber(req, ctx) {
        return { sessionToken: await service.verify(req.phoneNumber, req.otp, callContext(ctx)) };
      },
      async loginWithPhoneNumber(req, ctx) {
        return { sessionToken: await service.login(req.phoneNumber, req.otp, callContext(ctx)) };
      },
      async validatePhoneNumberLogin(req, ctx) {
        return { isValid: await service.validateLogin(req.phoneNumber, callContext(ctx)) };
      },
      async getProfile(req, ctx) {
        const user = await service.profile(ctx.requestHeader.get("authorization"), req.phoneNumber);
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
        return { revoked: await service.logout(authorization, req.all, callContext(ctx)) };
      },
    });
}
