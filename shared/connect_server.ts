// A lean bridge from Deno.serve to a Connect router: the route table is built once,
// a request is matched by path with one Map lookup, and unary replies go out as one
// buffer. Serves Connect (JSON and binary) and gRPC-Web. Plain gRPC needs HTTP
// trailers that Deno.serve cannot send, so a gRPC client gets an immediate,
// well-formed "trailers-only" UNIMPLEMENTED instead of a hung stream.
import { createConnectRouter, createContextKey, createContextValues } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { errorInterceptor } from "./connect_errors.ts";
import type { ErrorMapOptions } from "./connect_errors.ts";
import type { Logger } from "./log.ts";

/** The caller's address as the service sees it (socket, or trusted forwarded header). */
export const kClientAddress = createContextKey<string>("", { description: "client address" });
/** A per-request id, carried into logs and bus messages. */
export const kRequestId = createContextKey<string>("", { description: "request id" });

export interface HealthChecks {
  /** Dependencies reachable and migrations applied. */
  ready(): Promise<Record<string, boolean>>;
}

export interface ServeOptions {
  hostname?: string;
  port: number;
  logger: Logger;
  routes: (router: ConnectRouter) => void;
  health: HealthChecks;
  /** Number of reverse proxies in front whose X-Forwarded-For entries we trust. */
  trustedProxyHops?: number;
  /** Largest accepted request body. */
  readMaxBytes?: number;
  onListen?: (addr: Deno.NetAddr) => void;
  /** How the error mapper tells a database outage (unavailable) from a bug (internal). */
  errors?: ErrorMapOptions;
}

export interface RunningServer {
  port: number;
  /** Stops accepting, lets in-flight requests finish, then resolves. */
  shutdown(): Promise<void>;
  finished: Promise<void>;
}

export function serveConnect(o: ServeOptions): RunningServer {
  const readMaxBytes = o.readMaxBytes ?? 64 * 1024;
  const router = createConnectRouter({
    grpc: false,
    grpcWeb: true,
    connect: true,
    readMaxBytes,
    jsonOptions: { useProtoFieldName: true, alwaysEmitImplicit: true },
    interceptors: [errorInterceptor(o.logger, o.errors)],
  });
  o.routes(router);
  const table = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  const hops = o.trustedProxyHops ?? 0;

  const handler = async (req: Request, info: Deno.ServeHandlerInfo): Promise<Response> => {
    const path = pathOf(req.url);
    const h = table.get(path);
    if (h === undefined) return await serveOther(path, o.health);
    const contentType = req.headers.get("content-type") ?? "";
    if (
      contentType.startsWith("application/grpc") && !contentType.startsWith("application/grpc-web")
    ) {
      return grpcUnsupported();
    }
    const uReq: UniversalServerRequest = {
      httpVersion: "1.1",
      method: req.method,
      url: req.url,
      header: req.headers,
      body: req.body ?? emptyBody(),
      // Not req.signal: Deno aborts it after every response (legacy behaviour) and warns
      // when it is observed. Unary calls are short; Connect applies deadlines itself.
      signal: new AbortController().signal,
      contextValues: createContextValues()
        .set(kClientAddress, clientAddress(req, info, hops))
        .set(kRequestId, req.headers.get("x-request-id")?.slice(0, 64) || crypto.randomUUID()),
    };
    let uRes;
    let body: Uint8Array | null = null;
    try {
      uRes = await h(uReq);
      if (uRes.body !== undefined) body = await collect(uRes.body);
    } catch (err) {
      // connect-es can throw while encoding an error about a malformed request (e.g. a
      // message it cannot percent-encode): the request was at fault, and it gets a
      // well-formed error in its own protocol rather than a bare 500.
      o.logger.warn("malformed request rejected", { error: (err as Error).message });
      return requestError(contentType, "invalid_argument", MALFORMED);
    }
    if (uRes.status >= 500 || contentType.startsWith("application/grpc-web")) {
      const fixed = frameworkRequestError(uRes.status, contentType, body);
      if (fixed) return fixed;
    }
    return new Response(body as BodyInit | null, { status: uRes.status, headers: uRes.header });
  };

  const server = Deno.serve({
    hostname: o.hostname ?? "0.0.0.0",
    port: o.port,
    onListen: (addr) => o.onListen?.(addr as Deno.NetAddr),
  }, handler);
  return {
    port: (server.addr as Deno.NetAddr).port,
    shutdown: () => server.shutdown(),
    finished: server.finished,
  };
}

function pathOf(url: string): string {
  // "http://host:port/pkg.Service/Method?x" -> "/pkg.Service/Method", without a URL parse.
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  const q = url.indexOf("?", start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}

async function serveOther(path: string, health: HealthChecks): Promise<Response> {
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
  return new Response("not found", { status: 404 });
}

function grpcUnsupported(): Response {
  return new Response(null, {
    status: 200,
    headers: {
      "content-type": "application/grpc",
      "grpc-status": "12",
      "grpc-message": encodeURIComponent(
        "gRPC over HTTP/2 is not served here; use the Connect protocol or gRPC-Web",
      ),
    },
  });
}

function clientAddress(req: Request, info: Deno.ServeHandlerInfo, hops: number): string {
  const socket = (info.remoteAddr as Deno.NetAddr).hostname ?? "";
  if (hops <= 0) return socket;
  const forwarded = req.headers.get("x-forwarded-for");
  if (!forwarded) return socket;
  const chain = forwarded.split(",").map((s) => s.trim()).filter(Boolean);
  // Each trusted proxy appends the address it saw; entries left of those are client-made.
  return chain[Math.max(0, chain.length - hops)] ?? socket;
}

const MALFORMED = "request body is malformed";

/** What connect-es says when the request, not the server, is at fault. */
const REQUEST_FAULTS = [
  "parse binary",
  "parse json",
  "cannot decode",
  "compressed envelope",
  "invalid envelope",
  "protocol error",
  "premature",
  "unexpected end",
];

/**
 * connect-es reports some malformed requests (undecodable protobuf, a compressed flag
 * with no compression) as `internal` before any handler runs. Our own internal errors
 * always say exactly "internal error" (see connect_errors.ts), so any other `internal`
 * naming a request fault is the client's and becomes `invalid_argument`. Only error
 * replies are inspected, so successful calls pay nothing for this.
 */
function frameworkRequestError(status: number, contentType: string, body: Uint8Array | null) {
  if (!body || body.byteLength > 2048) return undefined;
  let text = new TextDecoder().decode(body);
  try {
    text = decodeURIComponent(text.replace(/%(?![0-9A-Fa-f]{2})/g, "%25"));
  } catch { /* keep it encoded */ }
  text = text.toLowerCase();
  const isInternal = (status === 500 && text.includes('"code":"internal"')) ||
    (contentType.startsWith("application/grpc-web") && text.includes("grpc-status: 13"));
  if (!isInternal || !REQUEST_FAULTS.some((f) => text.includes(f))) return undefined;
  return requestError(contentType, "invalid_argument", MALFORMED);
}

const GRPC_CODES = { invalid_argument: 3 } as const;

function requestError(contentType: string, code: "invalid_argument", message: string): Response {
  if (contentType.startsWith("application/grpc-web")) {
    // Trailers-only: status in the headers, no body.
    return new Response(null, {
      status: 200,
      headers: {
        "content-type": contentType.split(";")[0]!,
        "grpc-status": String(GRPC_CODES[code]),
        "grpc-message": encodeURIComponent(message),
      },
    });
  }
  return Response.json({ code, message }, { status: 400 });
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
