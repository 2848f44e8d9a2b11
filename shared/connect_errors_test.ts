import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { reasonOf, toConnectError } from "./connect_errors.ts";
import type { ErrorMapOptions } from "./connect_errors.ts";
import { DomainError, resourceExhausted } from "./errors.ts";
import { ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.ts";
import { isDatabaseUnavailable } from "./postgres_errors.ts";
import { createLogger } from "./log.ts";
import { InvalidPhoneNumber } from "./phone.ts";

const lines: string[] = [];
const log = createLogger("test", "debug", {}, (l) => lines.push(l));
const opts: ErrorMapOptions = { isDatabaseUnavailable };

Deno.test("domain errors keep their code and message", () => {
  const e = toConnectError(new DomainError("NOT_OWN_PROFILE", "not yours"), log, "M", opts);
  assert.equal(e.code, Code.PermissionDenied);
  assert.equal(e.rawMessage, "not yours");
  assert.equal(
    toConnectError(new InvalidPhoneNumber("x"), log, "M", opts).code,
    Code.InvalidArgument,
  );
});

Deno.test("resource_exhausted carries RetryInfo, retry-after and the time in the message", () => {
  const e = toConnectError(resourceExhausted("slow down", 41.2), log, "M", opts);
  assert.equal(e.code, Code.ResourceExhausted);
  assert.equal(e.rawMessage, "slow down; retry in 42s");
  assert.equal(e.metadata.get("retry-after"), "42");
  assert.equal(e.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds, 42n);
});

Deno.test("a lost database connection is unavailable, not internal", () => {
  const err = Object.assign(new Error("write CONNECTION_CLOSED"), { code: "CONNECTION_CLOSED" });
  assert.equal(toConnectError(err, log, "M", opts).code, Code.Unavailable);
  const killed = Object.assign(new Error("terminating connection"), { code: "57P01" });
  assert.equal(toConnectError(killed, log, "M", opts).code, Code.Unavailable);
});

Deno.test("anything unrecognised is internal, logged, and its cause kept out of the reply", () => {
  lines.length = 0;
  const e = toConnectError(new TypeError("secret detail at line 3"), log, "Signup", opts);
  assert.equal(e.code, Code.Internal);
  assert.equal(e.rawMessage, "internal error");
  assert.ok(lines.some((l) => l.includes("secret detail")));
  const passthrough = toConnectError(new ConnectError("bad", Code.InvalidArgument), log, "M", opts);
  assert.equal(passthrough.code, Code.InvalidArgument);
});

Deno.test("every domain error carries its reason in an ErrorInfo detail the client can read", () => {
  const e = toConnectError(
    new DomainError("CODE_INVALID", "invalid or expired code"),
    log,
    "M",
    opts,
  );
  assert.equal(e.code, Code.Unauthenticated);
  assert.equal(reasonOf(e), "CODE_INVALID");
  const limited = toConnectError(
    resourceExhausted("slow down", 3, "NUMBER_LOCKED"),
    log,
    "M",
    opts,
  );
  assert.equal(reasonOf(limited), "NUMBER_LOCKED");
  assert.equal(limited.findDetails(RetryInfoSchema).length, 1);
  assert.equal(
    reasonOf(toConnectError(new InvalidPhoneNumber("x"), log, "M", opts)),
    "PHONE_INVALID",
  );
  const down = Object.assign(new Error("x"), { code: "57P01" });
  assert.equal(reasonOf(toConnectError(down, log, "M", opts)), "UNAVAILABLE");
});

Deno.test("internal errors carry no reason, and foreign reasons are not taken for ours", () => {
  const e = toConnectError(new TypeError("boom"), log, "M", opts);
  assert.equal(e.findDetails(ErrorInfoSchema).length, 0);
  const foreign = new ConnectError("x", Code.InvalidArgument, undefined, [{
    desc: ErrorInfoSchema,
    value: create(ErrorInfoSchema, { reason: "CODE_INVALID", domain: "elsewhere" }),
  }]);
  assert.equal(reasonOf(foreign), undefined);
});

Deno.test("the outage check is the caller's: without it a driver error is internal", () => {
  const err = Object.assign(new Error("write CONNECTION_CLOSED"), { code: "CONNECTION_CLOSED" });
  const never = { isDatabaseUnavailable: () => false };
  assert.equal(toConnectError(err, log, "M", never).code, Code.Internal);
});
