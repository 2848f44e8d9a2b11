// Production sender: Twilio Programmable Messaging through the official client.
// Every failure becomes an SmsError whose message names the HTTP status and
// Twilio error code but never the auth token or the message body (it holds the code).

import twilio from "twilio";
import { deadline } from "../../shared/async.ts";
import { maskPhone } from "../../shared/log.ts";
import { SmsError, type SmsMessage, type SmsReceipt, type SmsSender } from "./sender.ts";

export interface TwilioSmsSenderOptions {
  accountSid: string;
  authToken: string;
  /** Sender number in E.164; exactly one of `from` and `messagingServiceSid`. */
  from?: string;
  messagingServiceSid?: string;
  timeoutMs?: number;
  /** Tests only: replaces the https://*.twilio.com origin, e.g. with a local fake's URL. */
  baseUrl?: string;
}

type Sender = { from: string } | { messagingServiceSid: string };
type RequestOptions<T> = Parameters<twilio.RequestClient["request"]>[0] & { data?: T };

/**
 * Keeps the real client's request building, Basic auth and response handling and
 * only changes where the request goes. The origin is swapped on the final URL, after
 * the client has applied any edge/region to the hostname.
 */
class RebasingRequestClient extends twilio.RequestClient {
  constructor(private readonly origin: URL, timeout: number) {
    super({ timeout, keepAlive: false });
  }

  override request<T>(opts: RequestOptions<T>) {
    const uri = new URL(opts.uri);
    uri.protocol = this.origin.protocol;
    uri.host = this.origin.host;
    return super.request({ ...opts, uri: uri.href });
  }
}

export class TwilioSmsSender implements SmsSender {
  readonly name = "twilio";
  readonly #client: twilio.Twilio;
  readonly #sender: Sender;
  readonly #timeoutMs: number;
  readonly #authToken: string;

  constructor(opts: TwilioSmsSenderOptions) {
    if (!opts.from === !opts.messagingServiceSid) {
      throw new Error("twilio: set exactly one of from and messagingServiceSid");
    }
    this.#sender = opts.from
      ? { from: opts.from }
      : { messagingServiceSid: opts.messagingServiceSid! };
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#authToken = opts.authToken;
    // No keep-alive: under Deno a request that timed out on a reused connection is sent
    // again by the HTTP layer, and every copy is a billable SMS.
    // Built now rather than on the first send, so that its environment reads
    // (TWILIO_CA_BUNDLE, HTTP_PROXY) fail at startup if the permissions lack them.
    const httpClient = opts.baseUrl
      ? new RebasingRequestClient(new URL(opts.baseUrl), this.#timeoutMs)
      : new twilio.RequestClient({ timeout: this.#timeoutMs, keepAlive: false });
    // Credentials are passed explicitly so the client never falls back to
    // TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN from the environment.
    this.#client = twilio(opts.accountSid, opts.authToken, {
      timeout: this.#timeoutMs,
      autoRetry: false, // the issuer retries, counting every call against the limits
      // Pinned so TWILIO_LOG_LEVEL=debug cannot make the client print requests.
      logLevel: "info",
      httpClient,
    });
  }

  async send(message: SmsMessage, signal?: AbortSignal): Promise<SmsReceipt> {
    if (signal?.aborted) throw new SmsError("twilio: send aborted", false);
    try {
      const created = this.#client.messages.create({
        to: message.to,
        body: message.body,
        ...this.#sender,
      });
      // A timeout or abort is transient: the retry wrapper may try again.
      const sent = await deadline(created, this.#timeoutMs, {
        signal,
        error: (cause) =>
          cause === "abort"
            ? new SmsError("twilio: send aborted", false)
            : new SmsError(`twilio: timed out after ${this.#timeoutMs} ms`, false),
      });
      return { providerId: sent.sid };
    } catch (err) {
      throw this.#toSmsError(err, message);
    }
  }

  #toSmsError(err: unknown, message: SmsMessage): SmsError {
    if (err instanceof SmsError) return err;
    const e = (err ?? {}) as Record<string, unknown>;
    // Axios errors carry the request config (Authorization header, form body): only the code is kept.
    if (e.isAxiosError === true) {
      const timedOut = e.code === "ECONNABORTED" || e.code === "ETIMEDOUT";
      const what = timedOut ? "timed out" : "network error";
      return new SmsError(`twilio: ${what} (${String(e.code ?? "unknown")})`, false);
    }
    if (typeof e.status === "number") {
      const status = e.status;
      const code = typeof e.code === "number" || typeof e.code === "string" ? e.code : undefined;
      const permanent = status >= 400 && status < 500 && status !== 429;
      const detail = typeof e.message === "string" && e.message
        ? `: ${this.#redact(e.message, message)}`
        : "";
      const text = `twilio: HTTP ${status}${code === undefined ? "" : `, error ${code}`}${detail}`;
      return new SmsError(text, permanent, code, status);
    }
    // Not from the API (e.g. a permission error): name its kind, never echo it.
    const kind = err instanceof Error ? err.name : typeof err;
    return new SmsError(`twilio: unexpected ${kind}`, false);
  }

  /** Twilio's messages may quote the destination; secrets and the body must never appear. */
  #redact(text: string, message: SmsMessage): string {
    const swap = (s: string, secret: string, by: string) => secret ? s.replaceAll(secret, by) : s;
    const hidden = swap(swap(text, this.#authToken, "[redacted]"), message.body, "[redacted]");
    return swap(hidden, message.to, maskPhone(message.to));
  }
}
