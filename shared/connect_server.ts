// A lean bridge from Deno.serve to a Connect router: the route table is built once,
// a request is matched by path with one Map lookup, and unary replies go out as one
// buffer. The common call (Connect unary POST, JSON or binary, uncompressed) takes the
// fast path of http/fast_unary.ts; everything else (gRPC-Web, Connect GET,
// compression, deadlines, streaming) goes through connect-es. Plain gRPC needs HTTP
// trailers that Deno.serve cannot send, so a gRPC client gets an immediate,
// well-formed "trailers-only" UNIMPLEMENTED instead of a hung stream.
import { createConnectRouter, createContextKey } from "@connectrpc/connect";
import type {
  ConnectError,
  ConnectRouter,
  ConnectRouterOptions,
  ContextKey,
  ContextValues,
  Interceptor,
} from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { errorInterceptor, toConnectError } from "./connect_errors.ts";
import type { ErrorMapOptions } from "./connect_errors.ts";
import { corsPolicy } from "./http/cors.ts";
import { fastPathLength, recordingRouter, serveFast } from "./http/fast_unary.ts";
import type { FastMethod, RequestGate, UnaryReply } from "./http/fast_unary.ts";
import { frameworkRequestError, grpcUnsupported, malformedRequest } from "./http/request_faults.ts";
import { resolveClientAddress } from "./ip.ts";
import type { Cidr } from "./ip.ts";
import type { Logger } from "./log.ts";

/** The caller's address as the service sees it (socket, or trusted forwarded header). */
export const kClientAddress = createContextKey<string>("", { description: "client address" });
/** A per-request id the server generates, carried into logs, audit rows and bus messages. */
export const kRequestId = createContextKey<string>("", { description: "request id" });
/** The caller's own X-Request-Id, sanitised; recorded beside kRequestId, never instead. */
export const kClientRequestId = createContextKey<string>("", {
  description: "client request id",
});

export interface HealthChecks {
  /** Dependencies reachable and migrations applied. */
  ready(): Promise<Record<string, boolean>>;
}

/** A plain GET route beside the RPCs (metrics, a key set, a page). */
export type PlainRoute = (req: Request) => Response | Promise<Response>;

/** Headers to read, not to change. */
export type ReceivedHeaders = Pick<Headers, "get" | "has">;

const NOT_RECEIVED = new Headers();

/**
 * The call's headers as they arrived, to read. A handler's ctx.requestHeader is its own
 * copy (as connect-es gives it), made the first time it is asked for; reading through
 * receivedHeaders() costs no copy.
 */
export const kReceivedHeaders = createContextKey<ReceivedHeaders>(NOT_RECEIVED, {
  description: "received headers",
});

interface CallWithHeaders {
  values: ContextValues;
  requestHeader: Headers;
}

/** The call's headers: as received by this server, else (another transport) the copy. */
export function receivedHeaders(ctx: CallWithHeaders): ReceivedHeaders {
  const received = ctx.values.get(kReceivedHeaders);
  return received === NOT_RECEIVED ? ctx.requestHeader : received;
}

/** One header of the call. */
export function receivedHeader(ctx: CallWithHeaders, name: string): string | null {
  return receivedHeaders(ctx).get(name);
}

/** Checks a call's headers before its body is read; throws (a domain error) to refuse. */
export type Authorize = (headers: ReceivedHeaders) => void | Promise<void>;

export interface ServeOptions {
  hostname?: string;
  port: number;
  logger: Logger;
  routes: (router: ConnectRouter) => void;
  health: HealthChecks;
  /** Reverse proxies whose X-Forwarded-For entries name the client; empty trusts none. */
  trustedProxies?: readonly Cidr[];
  /** Largest accepted request body. */
  readMaxBytes?: number;
  /** Exact origins browsers may call from; empty sends no CORS header at all. */
  corsAllowedOrigins?: readonly string[];
  /** GET routes by exact path, e.g. "/metrics". */
  plainRoutes?: Record<string, PlainRoute>;
  /** Per service type name (e.g. "otp.v1.OtpService"): run before the body is read. */
  authorize?: Record<string, Authorize>;
  /** Serve the common unary call without connect-es (default true). */
  fastPath?: boolean;
  onListen?: (addr: Deno.NetAddr) => void;
  /** How the error mapper tells a database outage (unavailable) from a bug (internal). */
  errors?: ErrorMapOptions;
  /** Run around every RPC, outside the error mapper (metrics go first). */
  interceptors?: Interceptor[];
  /** Told of each call an `authorize` check refused (those never reach the interceptors). */
  onRefusedByAuthorize?: (service: string, method: string, err: ConnectError) => void;
}

export interface RunningServer {
  port: number;
  /** Stops accepting, lets in-flight requests finish, then resolves. */
  shutdown(): Promise<void>;
}

export interface ConnectHandler {
  (req: Request, info: Deno.ServeHandlerInfo): Promise<Response>;
  /** Calls served so far by the fast path and by connect-es. */
  readonly served: { fast: number; connectEs: number };
}

export function serveConnect(o: ServeOptions): RunningServer {
  const server = Deno.serve({
    hostname: o.hostname ?? "0.0.0.0",
    port: o.port,
    onListen: (addr) => o.onListen?.(addr as Deno.NetAddr),
  }, connectHandler(o));
  return {
    port: (server.addr as Deno.NetAddr).port,
    shutdown: () => server.shutdown(),
  };
}

/** The whole request handler of serveConnect, usable without a socket. */
export function connectHandler(o: ServeOptions): ConnectHandler {
  const readMaxBytes = o.readMaxBytes ?? 64 * 1024;
  const errors = o.errors ?? { isDatabaseUnavailable: () => false };
  const options: ConnectRouterOptions = {
    grpc: false,
    grpcWeb: true,
    connect: true,
    readMaxBytes,
    jsonOptions: { useProtoFieldName: true, alwaysEmitImplicit: true },
    interceptors: [...(o.interceptors ?? []), errorInterceptor(o.logger, errors)],
  };
  const router = createConnectRouter(options);
  const fast = new Map<string, FastMethod>();
  const gated = gates(o.authorize ?? {}, o.logger, errors, o.onRefusedByAuthorize);
  o.routes(recordingRouter(router, options, fast, gated));
  if (o.fastPath === false) fast.clear();
  const table = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  const proxies = o.trustedProxies ?? [];
  const cors = corsPolicy(o.corsAllowedOrigins ?? []);
  const plain = new Map(Object.entries(o.plainRoutes ?? {}));
  const served = { fast: 0, connectEs: 0 };

  const contextValues = (req: Request, info: Deno.ServeHandlerInfo): ContextValues =>
    new RequestValues(clientAddress(req, info, proxies), req.headers);

  const serve = async (req: Request, info: Deno.ServeHandlerInfo): Promise<Response | Final> => {
    const url = req.url;
    const path = pathOf(url);
    const h = table.get(path);
    if (h === undefined) return await serveOther(req, path, o.health, plain);
    const contentType = req.headers.get("content-type") ?? "";
    const f = fast.get(path);
    let reply: UnaryReply | Response;
    const length = f === undefined ? -1 : fastPathLength(req, contentType);
    if (length >= 0) {
      served.fast++;
      try {
        reply = await serveFast(f!, req, { url, contentType, length }, contextValues(req, info));
      } catch (err) {
        reply = malformed(err, contentType);
      }
    } else {
      if (
        contentType.startsWith("application/grpc") &&
        !contentType.startsWith("application/grpc-web")
      ) {
        return grpcUnsupported();
      }
      served.connectEs++;
      reply = await serveUniversal(h, req, contentType, contextValues(req, info));
    }
    if (reply instanceof Response) return reply;
    if (
      typeof reply.body !== "string" &&
      (reply.status >= 500 || contentType.startsWith("application/grpc-web"))
    ) {
      const fixed = frameworkRequestError(reply.status, contentType, reply.body);
      if (fixed) return fixed;
    }
    const header = reply.header;
    if (Array.isArray(header) && cors === undefined) {
      // The common reply: its headers in one list, not changed again afterwards.
      header.push(NO_STORE, NOSNIFF);
      return new Final(reply.body, reply.status, header);
    }
    return new Response(reply.body as BodyInit | null, { status: reply.status, headers: header });
  };

  const serveUniversal = async (
    h: UniversalHandler,
    req: Request,
    contentType: string,
    values: ContextValues,
  ): Promise<UnaryReply | Response> => {
    const uReq: UniversalServerRequest = {
      httpVersion: "1.1",
      method: req.method,
      url: req.url,
      header: req.headers,
      body: req.body ?? emptyBody(),
      // Not req.signal: Deno aborts it after every response (legacy behaviour) and warns
      // when it is observed. Unary calls are short; Connect applies deadlines itself.
      signal: new AbortController().signal,
      contextValues: values,
    };
    try {
      const uRes = await h(uReq);
      const body = uRes.body === undefined ? null : await collect(uRes.body);
      const header = new Headers(uRes.header);
      // Deno writes the length of a whole body itself, as for the fast path's replies.
      header.delete("content-length");
      return { status: uRes.status, header, body: body! };
    } catch (err) {
      return malformed(err, contentType);
    }
  };

  // connect-es can throw while encoding an error about a malformed request (e.g. a
  // message it cannot percent-encode): the request was at fault, and it gets a
  // well-formed error in its own protocol rather than a bare 500.
  const malformed = (err: unknown, contentType: string): Response => {
    o.logger.warn("malformed request rejected", { error: (err as Error).message });
    return malformedRequest(contentType);
  };

  const handle = async (req: Request, info: Deno.ServeHandlerInfo): Promise<Response> => {
    const preflight = cors?.preflight(req);
    const res = preflight ?? await serve(req, info);
    if (res instanceof Final) return res.response();
    const headers = writable(res);
    headers.set("cache-control", "no-store");
    headers.set("x-content-type-options", "nosniff");
    if (preflight === undefined) cors?.decorate(req, headers);
    return res.headers === headers ? res : new Response(res.body, {
      status: res.status,
      statusText: res.statusText,
      headers,
    });
  };
  return Object.assign(handle, { served });
}

const NO_STORE: [string, string] = ["cache-control", "no-store"];
const NOSNIFF: [string, string] = ["x-content-type-options", "nosniff"];

/** A reply whose headers are complete already. */
class Final {
  constructor(
    private readonly body: Uint8Array | string,
    private readonly status: number,
    private readonly headers: [string, string][],
  ) {}
  response(): Response {
    // Headers given in the init make Deno prepare a native reply at once (and track it
    // for collection); setting them on a bare Response costs a fraction of that. A text
    // body arrives with a text/plain type, which the reply's own type replaces.
    const res = this.status === 200
      ? new Response(this.body as BodyInit)
      : new Response(this.body as BodyInit, { status: this.status });
    const h = res.headers;
    for (const [name, value] of this.headers) {
      if (name === "content-type") h.set(name, value);
      else h.append(name, value);
    }
    return res;
  }
}

/** The response's own headers when they can be changed, else a copy. */
function writable(res: Response): Headers {
  try {
    res.headers.set("x-content-type-options", "nosniff");
    return res.headers;
  } catch {
    return new Headers(res.headers);
  }
}

function gates(
  authorize: Record<string, Authorize>,
  log: Logger,
  errors: ErrorMapOptions,
  refused?: (service: string, method: string, err: ConnectError) => void,
): Record<string, RequestGate> {
  return Object.fromEntries(
    Object.entries(authorize).map(([service, check]) => [service, async (ctx) => {
      try {
        await check(receivedHeaders(ctx));
      } catch (err) {
        const refusal = toConnectError(err, log, ctx.method.name, errors);
        refused?.(service, ctx.method.name, refusal);
        throw refusal;
      }
    }]),
  );
}

function pathOf(url: string): string {
  // "http://host:port/pkg.Service/Method?x" -> "/pkg.Service/Method", without a URL parse.
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  const q = url.indexOf("?", start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}

async function serveOther(
  req: Request,
  path: string,
  health: HealthChecks,
  plain: Map<string, PlainRoute>,
): Promise<Response> {
  if (path === "/healthz") return Response.json({ status: "ok" });
  if (path === "/readyz") {
    let checks: Record<string, boolean>;
    try {
      checks = await health.ready();
    } catch {
      checks = { checks: false };
    }
    const ok = Object.values(checks).every(Boolean);
    return Response.json({ status: ok ? "ready" : "not ready", checks }, {
      status: ok ? 200 : 503,
    });
  }
  const route = plain.get(path);
  if (route !== undefined) {
    if (req.method === "GET" || req.method === "HEAD") return await route(req);
    return new Response("method not allowed", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  return new Response("not found", { status: 404 });
}

function clientAddress(
  req: Request,
  info: Deno.ServeHandlerInfo,
  proxies: readonly Cidr[],
): string {
  const socket = (info.remoteAddr as Deno.NetAddr).hostname ?? "";
  return resolveClientAddress(
    socket,
    proxies.length ? req.headers.get("x-forwarded-for") : null,
    proxies,
  );
}

/**
 * The context values of one call, as connect-es's createContextValues() would hold them,
 * except that the request id is generated and the caller's id cleaned the first time
 * someone reads them: most calls never do.
 */
class RequestValues implements ContextValues {
  #own: Record<symbol, unknown> | undefined;
  #requestId: string | undefined;
  #clientRequestId: string | undefined;
  constructor(private readonly address: string, private readonly headers: Headers) {}
  get<T>(key: ContextKey<T>): T {
    const own = this.#own;
    if (own !== undefined && key.id in own) return own[key.id] as T;
    if (key === kClientAddress) return this.address as T;
    if (key === kRequestId) return (this.#requestId ??= crypto.randomUUID()) as T;
    if (key === kClientRequestId) {
      return (this.#clientRequestId ??= clientRequestId(this.headers.get("x-request-id"))) as T;
    }
    if (key === kReceivedHeaders) return this.headers as T;
    return key.defaultValue;
  }
  set<T>(key: ContextKey<T>, value: T): this {
    (this.#own ??= {})[key.id] = value;
    return this;
  }
  delete(key: ContextKey<unknown>): this {
    // A deleted key reads as its default, the built-in ones too.
    (this.#own ??= {})[key.id] = key.defaultValue;
    return this;
  }
}

const CLIENT_ID_MAX = 64;

/** Printable ASCII without spaces or quotes, at most 64 characters; else empty. */
export function clientRequestId(raw: string | null): string {
  if (raw === null) return "";
  const kept = raw.replace(/[^\x21-\x7e]|["'\\]/g, "").slice(0, CLIENT_ID_MAX);
  return kept;
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const c of it) {
    chunks.push(c);
    size += c.byteLength;
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

async function* emptyBody(): AsyncIterable<Uint8Array> {}
