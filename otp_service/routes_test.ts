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
import { MemoryOtpStore, testIssuerSettings } from "./issuer_fixture.ts";

const TOKEN = "t".repeat(40);
const log = createLogger("test", "error");

function setup() {
  const store = new MemoryOtpStore();
  const sms: string[] = [];
  const key = HmacKey.import("k".repeat(32));
  const issuer = new OtpIssuer(
    store,
    store.limits,
    new ConsoleSmsSender((l) => sms.push(l)),
    { mac: key, code: key },
    { ...testIssuerSettings(), maxAttempts: 2 },
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
