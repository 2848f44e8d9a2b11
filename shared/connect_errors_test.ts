import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { toConnectError } from "./connect_errors.ts";
import { DomainError, resourceExhausted } from "./errors.ts";
import { RetryInfoSchema } from "./gen/google/rpc/error_details_pb.ts";
import { createLogger } from "./log.ts";
import { InvalidPhoneNumber } from "./phone.ts";

const lines: string[] = [];
const log = createLogger("test", "debug", {}, (l) => lines.push(l));

Deno.test("domain errors keep their code and message", () => {
  const e = toConnectError(new DomainError("permission_denied", "not yours"), log, "M");
  assert.equal(e.code, Code.PermissionDenied);
  assert.equal(e.rawMessage, "not yours");
  assert.equal(toConnectError(new InvalidPhoneNumber("x"), log, "M").code, Code.InvalidArgument);
});

Deno.test("resource_exhausted carries RetryInfo, retry-after and the time in the message", () => {
  const e = toConnectError(resourceExhausted("slow down", 41.2), log, "M");
  assert.equal(e.code, Code.ResourceExhausted);
  assert.equal(e.rawMessage, "slow down; retry in 42s");
  assert.equal(e.metadata.get("retry-after"), "42");
  assert.equal(e.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds, 42n);
});

Deno.test("a lost database connection is unavailable, not internal", () => {
  const err = Object.assign(new Error("write CONNECTION_CLOSED"), { code: "CONNECTION_CLOSED" });
  assert.equal(toConnectError(err, log, "M").code, Code.Unavailable);
  const killed = Object.assign(new Error("terminating connection"), { code: "57P01" });
  assert.equal(toConnectError(killed, log, "M").code, Code.Unavailable);
});

Deno.test("anything unrecognised is internal, logged, and its cause kept out of the reply", () => {
  lines.length = 0;
  const e = toConnectError(new TypeError("secret detail at line 3"), log, "Signup");
  assert.equal(e.code, Code.Internal);
  assert.equal(e.rawMessage, "internal error");
  assert.ok(lines.some((l) => l.includes("secret detail")));
  const passthrough = toConnectError(new ConnectError("bad", Code.InvalidArgument), log, "M");
  assert.equal(passthrough.code, Code.InvalidArgument);
});
