// Thin Connect handler for GenerateOtp, guarded by the internal API token.
import type { ConnectRouter } from "@connectrpc/connect";
import { OtpService } from "../shared/gen/otp/v1/otp_pb.ts";
import {
  kClientAddress,
  kClientRequestId,
  kRequestId,
  receivedHeader,
  receivedHeaders,
} from "../shared/connect_server.ts";
import type { Authorize, ReceivedHeaders } from "../shared/connect_server.ts";
import { constantTimeEqual, sha256 } from "../shared/crypto.ts";
import {
  invalidArgument,
  permissionDenied,
  resourceExhausted,
  unauthenticated,
  unavailable,
} from "../shared/errors.ts";
import { cleanText, isUuid, OtpPurpose, purposeName } from "../shared/messages.ts";
import { parsePhone, SMS_REFUSAL_MESSAGES } from "../shared/phone.ts";
import type { OtpIssuer } from "./issuer.ts";

/**
 * The internal API token check. The server runs it on the headers before it reads a
 * body; the handler runs it too, for transports that do not go through the server.
 */
export function internalTokenCheck(internalToken: string): Authorize {
  const expected = sha256(internalToken);
  return (headers: ReceivedHeaders) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(headers.get("authorization") ?? "");
    // Digests have equal length, so the comparison time says nothing about the token.
    if (!m || !constantTimeEqual(sha256(m[1]!), expected)) {
      throw unauthenticated("missing or invalid internal API token");
    }
  };
}

export function otpRoutes(issuer: OtpIssuer, authorize: Authorize) {
  return (router: ConnectRouter) =>
    router.service(OtpService, {
      async generateOtp(req, ctx) {
        await authorize(receivedHeaders(ctx));
        const phone = parsePhone(req.phoneNumber).e164;
        const purpose = req.purpose === OtpPurpose.UNSPECIFIED ? "login" : purposeName(req.purpose);
        if (!purpose) throw invalidArgument("unknown purpose");
        if (req.requestId !== "" && !isUuid(req.requestId)) {
          throw invalidArgument("request_id must be a UUID");
        }
        const outcome = await issuer.issue({
          requestId: req.requestId || crypto.randomUUID(),
          phoneNumber: phone,
          purpose,
          // Forwarded by auth-service, which saw the client; trusted because the caller is.
          clientAddress: cleanText(
            receivedHeader(ctx, "x-client-address") ?? ctx.values.get(kClientAddress),
          ),
          // The caller is authenticated, so its request id carries the trace on.
          traceId: ctx.values.get(kClientRequestId) || ctx.values.get(kRequestId),
          spentChallengeId: cleanText(req.spentChallengeId) || undefined,
        });
        switch (outcome.kind) {
          case "undeliverable":
            throw invalidArgument("an SMS cannot be delivered to this number");
          case "destination":
            throw permissionDenied(SMS_REFUSAL_MESSAGES[outcome.reason]);
          case "limited":
            throw resourceExhausted(outcome.message, outcome.retryAfterSeconds);
          case "unconfirmed":
            // Asking again resends the same code, once the cooldown allows.
            throw unavailable("the SMS provider did not confirm the message; it may still arrive");
        }
        return { message: "OTP sent" };
      },
    });
}
