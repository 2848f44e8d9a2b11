// One server for the tiny-call figures, started as its own process by bench/main.ts:
//   deno run --allow-net --allow-env bench/tiny_server.ts KIND PORT
// KIND is "raw" (Deno.serve parsing and writing the same JSON by hand), "fast" (our
// bridge) or "connect-es" (our bridge with every call through connect-es).
import { AuthService } from "../shared/gen/auth/v1/auth_pb.ts";
import { serveConnect } from "../shared/connect_server.ts";
import { createLogger } from "../shared/log.ts";

const [kind, portText] = Deno.args;
const port = Number(portText);
const ready = (p: number) => console.log(`listening ${p}`);

if (kind === "raw") {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen: (a) => ready(a.port) },
    async (req) => {
      const body = await req.json() as { phone_number?: string };
      return Response.json({ is_valid: (body.phone_number ?? "").length === 0 });
    },
  );
  Deno.addSignalListener("SIGTERM", () => server.shutdown().then(() => Deno.exit(0)));
} else if (kind === "fast" || kind === "connect-es") {
  const server = serveConnect({
    hostname: "127.0.0.1",
    port,
    logger: createLogger("bench", "error"),
    health: { ready: () => Promise.resolve({}) },
    fastPath: kind === "fast",
    routes: (r) =>
      r.rpc(AuthService.method.validatePhoneNumberLogin, (req) => ({
        isValid: req.phoneNumber.length === 0,
      })),
    onListen: (a) => ready(a.port),
  });
  Deno.addSignalListener("SIGTERM", () => server.shutdown().then(() => Deno.exit(0)));
} else {
  console.error(`unknown kind ${kind}`);
  Deno.exit(2);
}
