// GenerateOtp through the Connect router in-process (createRouterTransport, no socket),
// with an in-memory store: the token guard, validation and error codes.
import assert from "node:assert/strict";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { OtpService } from "../shared/gen/otp/v1/otp_pb.ts";
import { errorInterceptor } from "../shared/connect_errors.ts";
import { HmacKey } from "../shared/crypto.ts";
import { createLogger } from "../shared/log.ts";
import { OtpIssuer } from "./issuer.ts";
import { internalTokenCheck, otpRoutes } from "./routes.ts";
import { ConsoleSmsSender } from "./sms/console_sender.ts";
import type { CodeRequest, OtpStore, RequestState, RequestStatus } from "./store.ts";
import type { Limits } from "../shared/limits/engine.ts";
import { SMS_NUMBER_TYPES } from "../shared/phone.ts";

class MemoryStore implements OtpStore {
  readonly requests = new Map<string, RequestState>();
  readonly issued: string[] = [];
  find(id: string) {
    return Promise.resolve(this.requests.get(id) ?? null);
  }
  open(r: CodeRequest, ttlSeconds: number) {
    const known = this.requests.get(r.requestId);
    if (known) return Promise.resolve({ created: false, state: known });
    const now = new Date();
    const state: RequestState = {
      status: "pending",
      attempts: 0,
      challenge: {
        challengeId: r.requestId,
        issuedAt: now,
        expiresAt: new Date(now.getTime() + ttlSeconds * 1000),
      },
    };
    this.requests.set(r.requestId, state);
    return Promise.resolve({ created: true, state });
  }
  beginAttempt(id: string) {
    this.requests.get(id)!.attempts++;
    return Promise.resolve(true);
  }
  finish(id: string, status: Exclude<RequestStatus, "pending">) {
    this.requests.get(id)!.status = status;
    if (status === "sent") this.issued.push(id);
    return Promise.resolve();
  }
  audit = () => Promise.resolve();
  sweep = () => Promise.resolve();
}

/** Admits everything: the limits themselves are tested against PostgreSQL. */
const noLimits: Limits = {
  admit: (rules) => Promise.resolve({ admitted: true, reservation: { rules, at: 0 } }),
  refund: () => Promise.resolve(),
};

const TOKEN = "t".repeat(40);
const log = createLogger("test", "error");

function setup() {
  const store = new MemoryStore();
  const sms: string[] = [];
  const key = HmacKey.import("k".repeat(32));
  const issuer = new OtpIssuer(
    store,
    noLimits,
    new ConsoleSmsSender((l) => sms.push(l)),
    { mac: key, code: key },
    {
      codeLength: 6,
      ttlSeconds: 300,
      maxAttempts: 2,
      sending: {
        cooldownSeconds: 60,
        pairPerHour: 5,
        pairPerDay: 10,
        numberPerHour: 20,
        numberPerDay: 50,
        countryPerHour: 100,
        prefixPerHour: 100,
        hourSeconds: 3600,
        daySeconds: 86400,
      },
      budgetPerHour: 10,
      destinations: { allowedCountries: [], allowedNumberTypes: [...SMS_NUMBER_TYPES] },
    },
    log,
  );
  const routes = otpRoutes(issuer, internalTokenCheck(TOKEN));
  const transport = createRouterTransport(routes, {
    router: { interceptors: [errorInterceptor(log)] },
  });
  return { store, sms, client: createClient(OtpService, transport) };
}

const withToken = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });

Deno.test("GenerateOtp with the internal token sends one SMS and records one issued challenge", async () => {
  const { store, sms, client } = await setup();
  const res = await client.generateOtp(
    { phoneNumber: "+1 415 555 0123", requestId: "7f0c1c52-6d4a-4b8e-9a51-2f7e8c3d9b10" },
    withToken(TOKEN),
  );
  assert.equal(res.message, "OTP sent");
  assert.equal(sms.length, 1);
  assert.match(sms[0]!, /to=\+14155550123/);
  assert.deepEqual(store.issued, ["7f0c1c52-6d4a-4b8e-9a51-2f7e8c3d9b10"]);
  // The same request id again is idempotent: no second SMS.
  await client.generateOtp({
    phoneNumber: "+14155550123",
    requestId: "7f0c1c52-6d4a-4b8e-9a51-2f7e8c3d9b10",
  }, withToken(TOKEN));
  assert.equal(sms.length, 1);
});

Deno.test("GenerateOtp without or with a wrong token is unauthenticated and sends nothing", async () => {
  const { sms, client } = await setup();
  for (const opts of [undefined, withToken("nope"), withToken(TOKEN + "x")]) {
    await assert.rejects(client.generateOtp({ phoneNumber: "+14155550123" }, opts), (e) => {
      assert.equal(ConnectError.from(e).code, Code.Unauthenticated);
      return true;
    });
  }
  assert.equal(sms.length, 0);
});

Deno.test("GenerateOtp with a malformed number or oversized request id is invalid_argument", async () => {
  const { sms, client } = await setup();
  for (
    const req of [{ phoneNumber: "12" }, { phoneNumber: "+14155550123", requestId: "x".repeat(65) }]
  ) {
    await assert.rejects(client.generateOtp(req, withToken(TOKEN)), (e) => {
      assert.equal(ConnectError.from(e).code, Code.InvalidArgument);
      return true;
    });
  }
  assert.equal(sms.length, 0);
});

Deno.test("GenerateOtp for a premium-rate or satellite number is permission_denied and sends nothing", async () => {
  const { sms, client } = await setup();
  for (const phoneNumber of ["+1 900 555 0123", "+881 6 1234 5678"]) {
    await assert.rejects(client.generateOtp({ phoneNumber }, withToken(TOKEN)), (e) => {
      assert.equal(ConnectError.from(e).code, Code.PermissionDenied);
      return true;
    });
  }
  assert.equal(sms.length, 0);
});
