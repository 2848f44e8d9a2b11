// A local stand-in for Twilio's Messages API, for tests that drive the real
// twilio client (in-process or in a service started as a separate process).
import { delay, pollUntil } from "../shared/async.ts";

export interface FakeTwilioOptions {
  accountSid: string;
  authToken: string;
  /** Default 0: any free port. */
  port?: number;
}

/** One received request, as the fake understood it. */
export interface FakeTwilioRequest {
  method: string;
  path: string;
  /** AccountSid from the URL path, if the path matched the Messages route. */
  accountSid?: string;
  to?: string;
  from?: string;
  messagingServiceSid?: string;
  body?: string;
  authOk: boolean;
  /** The HTTP status the fake answered (or meant to, if the client gave up first). */
  replyStatus: number;
}

/**
 * What to answer to the next authenticated Messages request: "ok" (201), an error
 * status with an optional Twilio code and message, optionally after a delay.
 */
export type FakeReply = "ok" | {
  status?: number;
  code?: number;
  message?: string;
  delayMs?: number;
};

export interface FakeTwilio {
  /** Origin to give the client as its base URL, e.g. http://127.0.0.1:43210 */
  url: string;
  requests: FakeTwilioRequest[];
  /** Queue replies for the next requests; once used up, requests succeed. */
  script(replies: FakeReply[]): void;
  /** Resolves once `count` requests were received; rejects after `timeoutMs`. */
  waitForRequests(count: number, timeoutMs?: number): Promise<FakeTwilioRequest[]>;
  close(): Promise<void>;
}

const MESSAGES = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/;

const DEFAULT_ERRORS: Record<number, { code: number; message: string }> = {
  400: { code: 21211, message: "The 'To' number is not a valid phone number." },
  401: { code: 20003, message: "Authenticate" },
  404: { code: 20404, message: "The requested resource was not found" },
  429: { code: 20429, message: "Too Many Requests" },
  500: { code: 20500, message: "An internal server error has occurred" },
  503: { code: 20503, message: "Service unavailable" },
};

export function startFakeTwilio(opts: FakeTwilioOptions): FakeTwilio {
  const requests: FakeTwilioRequest[] = [];
  const queue: FakeReply[] = [];
  const closing = new AbortController();
  const expectedAuth = "Basic " + btoa(`${opts.accountSid}:${opts.authToken}`);

  const handler = async (req: Request): Promise<Response> => {
    const path = new URL(req.url).pathname;
    const authOk = req.headers.get("authorization") === expectedAuth;
    const record: FakeTwilioRequest = { method: req.method, path, authOk, replyStatus: 0 };
    requests.push(record);
    const reply = (status: number, json: unknown, headers: HeadersInit = {}) => {
      record.replyStatus = status;
      return Response.json(json, { status, headers });
    };

    const route = MESSAGES.exec(path);
    if (req.method !== "POST" || !route) return reply(404, twilioError(404));
    const form = new URLSearchParams(await req.text());
    Object.assign(record, {
      accountSid: route[1],
      to: form.get("To") ?? undefined,
      from: form.get("From") ?? undefined,
      messagingServiceSid: form.get("MessagingServiceSid") ?? undefined,
      body: form.get("Body") ?? undefined,
    });
    if (!authOk) {
      return reply(401, twilioError(401), { "WWW-Authenticate": 'Basic realm="Twilio API"' });
    }
    if (route[1] !== opts.accountSid) return reply(404, twilioError(404));

    const next = queue.shift() ?? "ok";
    if (next !== "ok" && next.delayMs) {
      // Cut short by close(), so a test that gave up waiting can still shut down at once.
      await delay(next.delayMs, { signal: closing.signal }).catch(() => {});
    }
    const status = next === "ok" ? 201 : next.status ?? 201;
    if (status !== 201) {
      const err = next === "ok" ? undefined : next;
      return reply(status, twilioError(status, err?.code, err?.message));
    }
    if (!record.to) return reply(400, twilioError(400, 21604, "A 'To' phone number is required."));
    if (!record.from && !record.messagingServiceSid) {
      return reply(400, twilioError(400, 21603, "A 'From' phone number is required."));
    }
    if (!record.body) return reply(400, twilioError(400, 21602, "Message body is required."));
    return reply(201, messageJson(opts.accountSid, record));
  };

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: opts.port ?? 0, onListen() {} },
    handler,
  );

  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    script(replies) {
      queue.push(...replies);
    },
    async waitForRequests(count, timeoutMs = 5000) {
      await pollUntil(() => requests.length >= count, { timeoutMs, intervalMs: 10 }).catch(() => {
        throw new Error(`fake twilio: ${requests.length}/${count} requests after ${timeoutMs} ms`);
      });
      return requests.slice(0, count);
    },
    async close() {
      closing.abort();
      await server.shutdown();
    },
  };
}

function twilioError(status: number, code?: number, message?: string) {
  const fallback = DEFAULT_ERRORS[status] ?? { code: status * 100, message: "Error" };
  const c = code ?? fallback.code;
  return {
    code: c,
    message: message ?? fallback.message,
    more_info: `https://www.twilio.com/docs/errors/${c}`,
    status,
  };
}

function messageJson(accountSid: string, r: FakeTwilioRequest) {
  const sid = "SM" + randomHex(16);
  const now = new Date().toUTCString().replace("GMT", "+0000");
  const uri = `/2010-04-01/Accounts/${accountSid}/Messages/${sid}`;
  return {
    account_sid: accountSid,
    api_version: "2010-04-01",
    body: r.body,
    date_created: now,
    date_sent: null,
    date_updated: now,
    direction: "outbound-api",
    error_code: null,
    error_message: null,
    // Like Twilio: a Messaging Service picks the sender later, so "from" starts out null.
    from: r.from ?? null,
    messaging_service_sid: r.messagingServiceSid ?? null,
    num_media: "0",
    num_segments: "1",
    price: null,
    price_unit: "USD",
    sid,
    status: r.messagingServiceSid ? "accepted" : "queued",
    subresource_uris: { media: `${uri}/Media.json` },
    to: r.to,
    uri: `${uri}.json`,
  };
}

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)))
    .map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** Env for otp-service to send through a (fake) Twilio at `baseUrl`. */
export function twilioEnv(
  baseUrl: string,
  accountSid: string,
  authToken: string,
): Record<string, string> {
  return {
    SMS_PROVIDER: "twilio",
    TWILIO_ACCOUNT_SID: accountSid,
    TWILIO_AUTH_TOKEN: authToken,
    TWILIO_FROM_NUMBER: "+15005550006",
    TWILIO_API_BASE_URL: baseUrl,
  };
}
