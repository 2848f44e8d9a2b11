// Reading one-time codes the way a user would: from the SMS the console sender printed
// or the body a (fake) Twilio received. The code pattern follows the configured length.
import { pollUntil } from "../shared/async.ts";
import { constantTimeEqual, HmacKey, otpMac } from "../shared/crypto.ts";
import { parseConsoleSmsLine } from "../otp_service/sms/console_sender.ts";
import type { PurposeName } from "../shared/messages.ts";
import type { Stack } from "./stack.ts";

/** The services' default OTP_LENGTH. */
export const DEFAULT_CODE_LENGTH = 6;

/** A standalone run of exactly `length` digits (no longer number contains it). */
export function codePattern(length = DEFAULT_CODE_LENGTH): RegExp {
  return new RegExp(`(?<!\\d)(\\d{${length}})(?!\\d)`);
}

/** The code in an SMS body, or null when it holds none. */
export function findCode(body: string | undefined, o: { length?: number } = {}): string | null {
  return codePattern(o.length).exec(body ?? "")?.[1] ?? null;
}

/** The code in an SMS body; throws when it holds none. */
export function codeIn(body: string | undefined, o: { length?: number } = {}): string {
  const code = findCode(body, o);
  if (!code) throw new Error("no code in SMS body");
  return code;
}

/** The code length a stack's otp-service was started with. */
export function codeLength(stack: Pick<Stack, "env">): number {
  return Number(stack.env.otp.OTP_LENGTH ?? DEFAULT_CODE_LENGTH);
}

/** The code in one console sender line (`[sms] to=… body="…"`). */
export function codeInConsoleLine(line: string, o: { length?: number } = {}): string {
  return codeIn(parseConsoleSmsLine(line)?.body, o);
}

/**
 * The first code the console SMS sender printed for `phone` at or after line `from`,
 * once auth-service holds the matching challenge (so the code can be redeemed).
 */
export async function codeFor(
  stack: Stack,
  phone: string,
  purpose: PurposeName,
  from = 0,
  timeoutMs = 15_000,
): Promise<string> {
  const line = await stack.otp.waitForLine(
    (l) => parseConsoleSmsLine(l)?.to === phone,
    timeoutMs,
    from,
  );
  const code = codeInConsoleLine(line, { length: codeLength(stack) });
  const key = HmacKey.import(stack.secrets.OTP_HMAC_KEY);
  await pollUntil(
    async () => {
      const [c] = await stack.sql<
        { request_id: string; code_mac: Uint8Array; expires_at: Date }[]
      >`
      select request_id, code_mac, expires_at from auth.challenges
       where phone_number = ${phone} and purpose = ${purpose} and consumed_at is null`;
      if (!c) return false;
      const mac = otpMac(key, {
        challengeId: c.request_id,
        phone,
        purpose,
        expiresAt: c.expires_at,
        code,
      });
      return constantTimeEqual(mac, new Uint8Array(c.code_mac));
    },
    { timeoutMs, what: `challenge for ${phone}` },
  );
  return code;
}
