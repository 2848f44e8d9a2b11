// Domain errors: what went wrong in terms the client can act on. Domain code throws
// these and nothing transport-specific; shared/connect_errors.ts maps them to Connect.

export type ErrorKind =
  | "invalid_argument"
  | "unauthenticated"
  | "permission_denied"
  | "already_exists"
  | "not_found"
  | "failed_precondition"
  | "resource_exhausted"
  | "unavailable";

export class DomainError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** For resource_exhausted: seconds until a retry can succeed. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = "DomainError";
  }
}

export const invalidArgument = (m: string) => new DomainError("invalid_argument", m);
export const unauthenticated = (m: string) => new DomainError("unauthenticated", m);
export const permissionDenied = (m: string) => new DomainError("permission_denied", m);
export const alreadyExists = (m: string) => new DomainError("already_exists", m);
export const unavailable = (m: string) => new DomainError("unavailable", m);
export const resourceExhausted = (m: string, retryAfterSeconds?: number) =>
  new DomainError("resource_exhausted", m, retryAfterSeconds);
