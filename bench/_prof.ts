import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { connectHandler } from "../shared/connect_server.ts";
import { createLogger } from "../shared/log.ts";
const h = connectHandler({
  port: 0,
  logger: createLogger("bench", "error"),
  health: { ready: () => Promise.resolve({}) },
  fastPath: Deno.args[0] !== "slow",
  routes: (r) =>
    r.rpc(
      AuthService.method.validatePhoneNumberLogin,
      (req) => ({ isValid: req.phoneNumber.length === 0 }),
    ),
});
const info = {
  remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
} as unknown as Deno.ServeHandlerInfo;
const body = new TextEncoder().encode('{"phone_number":"+14155550123"}');
async function one() {
  const req = new Request("http://127.0.0.1/auth.v1.AuthService/ValidatePhoneNumberLogin", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "content-length": String(body.byteLength),
      "user-agent": "wrk",
      host: "127.0.0.1:1",
    },
    body,
  });
  const res = await h(req, info);
  await res.arrayBuffer();
}
for (let i = 0; i < 20000; i++) await one();
const t = performance.now();
const N = 100000;
for (let i = 0; i < N; i++) await one();
console.log(Deno.args[0] ?? "fast", (N / ((performance.now() - t) / 1000)).toFixed(0), "/s");
