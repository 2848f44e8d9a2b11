// CORS for browser clients on listed origins only. A request from any other origin, or
// with no Origin, gets no CORS header at all, so the browser keeps its default refusal.
import { cors } from "@connectrpc/connect";

/** How long a browser may cache a preflight answer. */
const MAX_AGE_SECONDS = 7200;

export interface CorsPolicy {
  /** The preflight answer for `req`, or undefined when it is not an allowed preflight. */
  preflight(req: Request): Response | undefined;
  /** Adds the headers of an actual response to an allowed origin. */
  decorate(req: Request, headers: Headers): void;
}

/** Undefined when no origin is allowed: then nothing about CORS is ever sent. */
export function corsPolicy(allowedOrigins: readonly string[]): CorsPolicy | undefined {
  if (allowedOrigins.length === 0) return undefined;
  const allowed = new Set(allowedOrigins);
  const allowMethods = cors.allowedMethods.join(", ");
  const allowHeaders = [...cors.allowedHeaders, "Authorization", "X-Request-Id"].join(", ");
  const exposeHeaders = [
    ...new Set([
      ...cors.exposedHeaders,
      "Grpc-Status",
      "Grpc-Message",
      "Grpc-Status-Details-Bin",
      "Retry-After",
    ]),
  ].join(", ");
  const originOf = (req: Request) => {
    const origin = req.headers.get("origin");
    return origin !== null && allowed.has(origin) ? origin : undefined;
  };
  return {
    preflight(req) {
      if (req.method !== "OPTIONS" || !req.headers.has("access-control-request-method")) {
        return undefined;
      }
      const origin = originOf(req);
      if (origin === undefined) return undefined;
      return new Response(null, {
        status: 204,
        headers: {
          "access-control-allow-origin": origin,
          "access-control-allow-methods": allowMethods,
          "access-control-allow-headers": allowHeaders,
          "access-control-max-age": String(MAX_AGE_SECONDS),
          "vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        },
      });
    },
    decorate(req, headers) {
      const origin = originOf(req);
      if (origin === undefined) return;
      headers.set("access-control-allow-origin", origin);
      headers.set("access-control-expose-headers", exposeHeaders);
      headers.append("vary", "Origin");
    },
  };
}
