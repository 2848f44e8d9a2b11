// The SMS port of otp-service. Implementations: console (development, tests) and
// Twilio (production). Only the console sender ever prints a message body.

export interface SmsMessage {
  /** Destination in E.164. */
  to: string;
  /** Full text; contains the code, so it must never be logged outside the console sender. */
  body: string;
}

export interface SmsReceipt {
  /** Provider's message id (Twilio's SID), for correlation. */
  providerId: string;
}

/**
 * A send that failed. `permanent` means retrying cannot help (invalid number,
 * unverified destination, bad credentials); otherwise it may succeed later
 * (5xx, 429, timeouts, network errors).
 */
export class SmsError extends Error {
  constructor(
    message: string,
    readonly permanent: boolean,
    readonly providerCode?: string | number,
    readonly status?: number,
  ) {
    super(message);
    this.name = "SmsError";
  }
}

export interface SmsSender {
  readonly name: string;
  send(message: SmsMessage, signal?: AbortSignal): Promise<SmsReceipt>;
}
