// Signing users up and in through a running stack, the way a client would: the codes
// are read from the SMS otp-service sent.
import { createClient } from "@connectrpc/connect";
import type { Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { codeFor } from "./sms_codes.ts";
import { randomPhone } from "./stack.ts";
import type { Stack } from "./stack.ts";

export type AuthClient = Client<typeof AuthService>;

export function authClient(stack: Stack, o: { userAgent?: string } = {}): AuthClient {
  return createClient(
    AuthService,
    createConnectTransport({
      baseUrl: stack.authUrl,
      interceptors: o.userAgent
        ? [(next) => (req) => {
          req.header.set("user-agent", o.userAgent!);
          return next(req);
        }]
        : [],
    }),
  );
}

export const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** A new verified user: its number and the reply of VerifyPhoneNumber. */
export async function signUp(stack: Stack, client: AuthClient, phone = randomPhone()) {
  const mark = stack.otp.lines.length;
  await client.signupWithPhoneNumber({ phoneNumber: phone });
  const otp = await codeFor(stack, phone, "signup", mark);
  return { phone, ...await client.verifyPhoneNumber({ phoneNumber: phone, otp }) };
}

/** Asks for a login code for `phone` and returns it, once auth-service holds it. */
export async function loginCode(stack: Stack, client: AuthClient, phone: string) {
  const mark = stack.otp.lines.length;
  const { isValid } = await client.validatePhoneNumberLogin({ phoneNumber: phone });
  if (!isValid) throw new Error(`${phone} is not a verified user`);
  return await codeFor(stack, phone, "login", mark);
}

/** Logs a verified number in again: the reply of LoginWithPhoneNumber. */
export async function logIn(stack: Stack, client: AuthClient, phone: string) {
  const otp = await loginCode(stack, client, phone);
  return await client.loginWithPhoneNumber({ phoneNumber: phone, otp });
}
