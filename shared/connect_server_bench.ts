// How much the Connect bridge costs over raw Deno.serve, on loopback with keep-alive:
//   deno task bench
// The raw handler parses and writes the same JSON, so the difference is the bridge and
// connect-es itself (routing, content negotiation, protobuf JSON mapping).
import { create, toBinary } from "@bufbuild/protobuf";
import { AuthService, ValidatePhoneNumberLoginRequestSchema } from "./gen/auth/v1/auth_pb.ts";
import { serveConnect } from "./connect_server.ts";
import { createLogger } from "./log.ts";

const logger = createLogger("bench", "error");
const bridge = serveConnect({
  hostname: "127.0.0.1",
  port: 0,
  logger,
  health: { ready: () => Promise.resolve({}) },
  routes: (r) =>
    r.rpc(AuthService.method.validatePhoneNumberLogin, (req) => ({
      isValid: req.phoneNumber.length === 0,
    })),
});
const raw = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
  const body = await req.json() as { phone_number?: string };
  return Response.json({ is_valid: (body.phone_number ?? "").length === 0 });
});
const path = "/auth.v1.AuthService/ValidatePhoneNumberLogin";
const json = JSON.stringify({ phone_number: "+14155550123" });
const binary = toBinary(
  ValidatePhoneNumberLoginRequestSchema,
  create(ValidatePhoneNumberLoginRequestSchema, { phoneNumber: "+14155550123" }),
);

async function call(port: number, contentType: string, body: BodyInit) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: "POST",
    headers: { "content-type": contentType },
    body,
  });
  await res.arrayBuffer();
}

Deno.bench("raw Deno.serve, JSON", { group: "unary", baseline: true }, async () => {
  await call((raw.addr as Deno.NetAddr).port, "application/json", json);
});
Deno.bench("Connect bridge, JSON", { group: "unary" }, async () => {
  await call(bridge.port, "application/json", json);
});
Deno.bench("Connect bridge, binary", { group: "unary" }, async () => {
  await call(bridge.port, "application/proto", binary);
});

globalThis.addEventListener("unload", () => {
  bridge.shutdown();
  raw.shutdown();
});
