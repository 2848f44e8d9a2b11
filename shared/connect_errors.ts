// The one place where errors become Connect errors. Each domain reason has one code and
// travels to the client in an ErrorInfo detail. Anything not recognised is `internal`,
// logged with its cause, and the client sees no detail of it.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Interceptor } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.ts";
import { DomainError } from "./errors.ts";
import type { Reason } from "./errors.ts";
import { InvalidPhoneNumber } from "./phone.ts";
import { PublishError } from "./bus.ts";
import type { Logger } from "./log.ts";

export const REASON_CODES: Readonly<Record<Reason, Code>> = {
  INVALID_ARGUMENT: Code.InvalidArgument,
  PHONE_INVALID: Code.InvalidArgument,
  CODE_MALFORMED: Code.InvalidArgument,
  UNAUTHENTICATED: Code.Unauthenticated,
  CODE_INVALID: Code.Unauthenticated,
  SESSION_INVALID: Code.Unauthenticated,
  ADMIN_TOKEN_INVALID: Code.Unauthenticated,
  PERMISSION_DENIED: Code.PermissionDenied,
  COUNTRY_NOT_ALLOWED: Code.PermissionDenied,
  NOT_OWN_PROFILE: Code.PermissionDenied,
  ALREADY_REGISTERED: Code.AlreadyExists,
  USER_NOT_FOUND: Code.NotFound,
  PHONE_TAKEN: Code.AlreadyExists,
  RATE_LIMITED: Code.ResourceExhausted,
  CODE_EXHAUSTED: Code.ResourceExhausted,
  NUMBER_LOCKED: Code.ResourceExhausted,
  UNAVAILABLE: Code.Unavailable,
};

/** The ErrorInfo domain of every reason this system sends. */
export const ERROR_DOMAIN = "phone-auth";

export interface ErrorMapOptions {
  /** True for errors that mean the database is unreachable or busy right now. */
  isDatabaseUnavailable: (err: unknown) => boolean;
}

/** The reason a Connect error carries, if it is one of ours. */
export function reasonOf(err: ConnectError): Reason | undefined {
  const reason = err.findDetails(ErrorInfoSchema)
    .find((d) => d.domain === ERROR_DOMAIN)?.reason;
  return reason !== undefined && Object.hasOwn(REASON_CODES, reason) ? reason as Reason : undefined;
}

export function toConnectError(
  err: unknown,
  log: Logger,
  procedure: string,
  options: ErrorMapOptions,
): ConnectError {
  if (err instanceof DomainError) return fromDomain(err);
  if (err instanceof InvalidPhoneNumber) {
    return fromDomain(new DomainError("PHONE_INVALID", err.message));
  }
  if (err instanceof ConnectError) {
    if (err.code === Code.Internal) log.error("internal error", { procedure, error: err.message });
    return err.code === Code.Internal ? new ConnectError("internal error", Code.Internal) : err;
  }
  if (options.isDatabaseUnavailable(err) || (err instanceof PublishError)) {
    log.warn("dependency unavailable", { procedure, error: (err as Error).message });
    return fromDomain(new DomainError("UNAVAILABLE", "service temporarily unavailable, try again"));
  }
  log.error("internal error", {
    procedure,
    error: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
  });
  return new ConnectError("internal error", Code.Internal);
}

function fromDomain(err: DomainError): ConnectError {
  const info = {
    desc: ErrorInfoSchema,
    value: create(ErrorInfoSchema, {
      reason: err.reason,
      domain: ERROR_DOMAIN,
    }),
  };
  const code = REASON_CODES[err.reason];
  if (code === Code.ResourceExhausted && err.retryAfterSeconds !== undefined) {
    const seconds = Math.max(1, Math.ceil(err.retryAfterSeconds));
    const retry = create(RetryInfoSchema, {
      retryDelay: create(DurationSchema, { seconds: BigInt(seconds) }),
    });
    return new ConnectError(`${err.message}; retry in ${seconds}s`, code, {
      "retry-after": String(seconds),
    }, [{ desc: RetryInfoSchema, value: retry }, info]);
  }
  return new ConnectError(err.message, code, undefined, [info]);
}

/** Without options no error counts as a database outage (for routers with no database). */
export function errorInterceptor(
  log: Logger,
  options: ErrorMapOptions = { isDatabaseUnavailable: () => false },
): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      throw toConnectError(err, log, req.method.name, options);
    }
  };
}
