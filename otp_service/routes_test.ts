// GenerateOtp through the Connect router in-process (createRouterTransport, no socket),
// with an in-memory store: the token guard, validation and error codes.
import assert from "node:assert/strict";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { OtpService } from "../shared/gen/otp/v1/otp_pb.ts";
import { errorInterceptor } from "../shared/connect_errors.ts";
import { HmacKey } from "../shared/crypto.ts";
import { createLogger } from "../shared/log.ts";
import { OtpIssuer } from "./issuer.ts";
import { otpRoutes } from "./routes.ts";
import { ConsoleSmsSender } from "./sms/console_sender.ts";
import type { BeginOutcome, CodeRequest, OtpStore, RequestStatus } from "./store.ts";

class MemoryStore implements OtpStore {
  readonly requests = new Map<string, RequestStatus>();
  readonly issued: string[] = [];
  begin(r: CodeRequest): Promise<BeginOutcome> {
    const known = this.requests.get(r.requestId);
    if (!known) this.requests.set(r.requestId, "pending");
    return Promise.resolve({ status: known ?? "pending" });
  }
  markSent(id: string): Promise<void> {
    this.requests.set(id, "sent");
    this.issued.push(id);
    return Promise.resolve();
  }
  markFailed(id: string): Promise<void> {
    this.requests.set(id, "failed");
    return Promise.resolve();
  }
  audit = () => Promise.resolve();
  sweep = () => Promise.resolve();
}

const TOKEN = "t".repeat(40);
const log = createLogger("test", "error");

async function setup() {
  const store = new MemoryStore();
  const sms: string[] = [];
  const issuer = new OtpIssuer(
    store,
    new ConsoleSmsSender((l) => sms.push(l)),
    await HmacKey.import("k".repeat(32)),
    {
      codeLength: 6,
      ttlSeconds: 300,
      limits: {
        cooldownSeconds: 60,
        perHour: 5,
        perDay: 10,
        hourSeconds: 3600,
        daySeconds: 86400,
        globalPerHour: 10,
      },
      allowedCountries: [],
    },
    log,
  );
  const routes = await otpRoutes(issuer, TOKEN);
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
