// The one place where errors become Connect errors. Anything not recognised is
// `internal`, logged with its cause, and the client sees no detail of it.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Interceptor } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { RetryInfoSchema } from "./gen/google/rpc/error_details_pb.ts";
import { DomainError } from "./errors.ts";
import type { ErrorKind } from "./errors.ts";
import { InvalidPhoneNumber } from "./phone.ts";
import { isDatabaseUnavailable } from "./postgres.ts";
import { PublishError } from "./bus.ts";
import type { Logger } from "./log.ts";

const codes: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  already_exists: Code.AlreadyExists,
  not_found: Code.NotFound,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
};

export function toConnectError(err: unknown, log: Logger, procedure: string): ConnectError {
  if (err instanceof DomainError) {
    if (err.kind === "resource_exhausted" && err.retryAfterSeconds !== undefined) {
      const seconds = Math.max(1, Math.ceil(err.retryAfterSeconds));
      const detail = create(RetryInfoSchema, {
        retryDelay: create(DurationSchema, { seconds: BigInt(seconds) }),
      });
      return new ConnectError(`${err.message}; retry in ${seconds}s`, Code.ResourceExhausted, {
        "retry-after": String(seconds),
      }, [{ desc: RetryInfoSchema, value: detail }]);
    }
    return new ConnectError(err.message, codes[err.kind]);
  }
  if (err instanceof InvalidPhoneNumber) return new ConnectError(err.message, Code.InvalidArgument);
  if (err instanceof ConnectError) {
    if (err.code === Code.Internal) log.error("internal error", { procedure, error: err.message });
    return err.code === Code.Internal ? new ConnectError("internal error", Code.Internal) : err;
  }
  if (isDatabaseUnavailable(err) || (err instanceof PublishError)) {
    log.warn("dependency unavailable", { procedure, error: (err as Error).message });
    return new ConnectError("service temporarily unavailable, try again", Code.Unavailable);
  }
  log.error("internal error", {
    procedure,
    error: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
  });
  return new ConnectError("internal error", Code.Internal);
}

export function errorInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      throw toConnectError(err, log, req.method.name);
    }
  };
}
