// OtpGateway over Connect RPC: calls otp-service's GenerateOtp with the internal token.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { OtpService } from "../shared/gen/otp/v1/otp_pb.ts";
import { RetryInfoSchema } from "../shared/gen/google/rpc/error_details_pb.ts";
import {
  invalidArgument,
  permissionDenied,
  resourceExhausted,
  unavailable,
} from "../shared/errors.ts";
import { reasonOf } from "../shared/connect_errors.ts";
import { purposeFromName } from "../shared/messages.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { Logger } from "../shared/log.ts";
import type { CallContext, OtpGateway } from "./ports.ts";

export function createOtpGateway(
  baseUrl: string,
  internalToken: string,
  log: Logger,
  timeoutMs = 15_000,
): OtpGateway {
  const authorization = `Bearer ${internalToken}`;
  const client = createClient(
    OtpService,
    createConnectTransport({
      baseUrl,
      useBinaryFormat: true,
      interceptors: [(next) => (req) => {
        req.header.set("authorization", authorization);
        return next(req);
      }],
    }),
  );
  return {
    async requestCode(
      phone: string,
      purpose: PurposeName,
      ctx: CallContext,
      o: { spentChallengeId?: string } = {},
    ): Promise<void> {
      try {
        await client.generateOtp(
          {
            phoneNumber: phone,
            purpose: purposeFromName(purpose),
            requestId: crypto.randomUUID(),
            spentChallengeId: o.spentChallengeId ?? "",
          },
          {
            timeoutMs,
            headers: { "x-request-id": ctx.requestId, "x-client-address": ctx.clientAddress },
          },
        );
      } catch (err) {
        throw translate(ConnectError.from(err), log);
      }
    },
  };
}

function translate(err: ConnectError, log: Logger): Error {
  switch (err.code) {
    case Code.ResourceExhausted: {
      const retry = err.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds;
      return resourceExhausted(
        stripRetry(err.rawMessage),
        Number(retry ?? 60),
        reasonOf(err) ?? "RATE_LIMITED",
      );
    }
    case Code.InvalidArgument:
      return invalidArgument(err.rawMessage, reasonOf(err));
    case Code.PermissionDenied:
      return permissionDenied(err.rawMessage, reasonOf(err));
    default:
      // Our own misconfiguration (bad token) or otp-service trouble: not the client's doing.
      log.error("otp-service call failed", { code: Code[err.code], error: err.rawMessage });
      return unavailable("could not send a code right now, try again");
  }
}

function stripRetry(message: string): string {
  return message.replace(/; retry in \d+s$/, "");
}
