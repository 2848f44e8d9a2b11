// Domain errors: what went wrong in terms the client can act on. Domain code throws
// these and nothing transport-specific; shared/connect_errors.ts maps each reason to
// its Connect code and sends the reason itself in an ErrorInfo detail.

/** Stable machine-readable reasons; clients may branch on them, so never rename one. */
export type Reason =
  | "INVALID_ARGUMENT"
  | "PHONE_INVALID"
  | "CODE_MALFORMED"
  | "UNAUTHENTICATED"
  | "CODE_INVALID"
  | "SESSION_INVALID"
  | "ADMIN_TOKEN_INVALID"
  | "PERMISSION_DENIED"
  | "COUNTRY_NOT_ALLOWED"
  | "NOT_OWN_PROFILE"
  | "ALREADY_REGISTERED"
  | "USER_NOT_FOUND"
  | "PHONE_TAKEN"
  | "RATE_LIMITED"
  | "CODE_EXHAUSTED"
  | "NUMBER_LOCKED"
  | "UNAVAILABLE";

export class DomainError extends Error {
  constructor(
    readonly reason: Reason,
    message: string,
    /** For refusals that pass with time: seconds until a retry can succeed. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = "DomainError";
  }
}

export const invalidArgument = (m: string, reason: Reason = "INVALID_ARGUMENT") =>
  new DomainError(reason, m);
export const unauthenticated = (m: string, reason: Reason = "UNAUTHENTICATED") =>
  new DomainError(reason, m);
export const permissionDenied = (m: string, reason: Reason = "PERMISSION_DENIED") =>
  new DomainError(reason, m);
export const notFound = (m: string, reason: Reason) => new DomainError(reason, m);
export const unavailable = (m: string) => new DomainError("UNAVAILABLE", m);
export const resourceExhausted = (
  m: string,
  retryAfterSeconds?: number,
  reason: Reason = "RATE_LIMITED",
) => new DomainError(reason, m, retryAfterSeconds);
