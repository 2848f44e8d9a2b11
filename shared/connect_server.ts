// A lean bridge from Deno.serve to a Connect router: the route table is built once,
// a request is matched by path with one Map lookup, and unary replies go out as one
// buffer. Serves Connect (JSON and binary) and gRPC-Web. Plain gRPC needs HTTP
// trailers that Deno.serve cannot send, so a gRPC client gets an immediate,
// well-formed "trailers-only" UNIMPLEMENTED instead of a hung stream.
import { createConnectRouter, createContextKey, createContextValues } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { errorInterceptor } from "./connect_errors.ts";
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
    interceptors: [errorInterceptor(o.logger)],
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
    const declared = Number(req.headers.get("content-length") ?? 0);
    if (declared > readMaxBytes) return new Response("request body too large", { status: 413 });
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
    const uRes = await h(uReq);
    let body: Uint8Array | null = null;
    if (uRes.body !== undefined) body = await collect(uRes.body);
    if (uRes.status === 500 || contentType.startsWith("application/grpc-web")) {
      const fixed = clientParseError(uRes.status, contentType, body);
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

const PARSE_MESSAGE = "request body is not a valid protobuf message";

/**
 * connect-es reports an undecodable binary request as `internal` ("parse binary: ...").
 * The fault is the client's, so it becomes `invalid_argument`. Only error replies are
 * inspected, so successful calls pay nothing for this.
 */
function clientParseError(status: number, contentType: string, body: Uint8Array | null) {
  if (!body || body.byteLength > 1024) return undefined;
  const text = new TextDecoder().decode(body);
  if (!text.includes("parse binary") && !text.includes("parse%20binary")) return undefined;
  if (status === 500 && text.includes('"code":"internal"')) {
    return Response.json({ code: "invalid_argument", message: PARSE_MESSAGE }, { status: 400 });
  }
  if (contentType.startsWith("application/grpc-web") && text.includes("grpc-status: 13")) {
    const trailer = new TextEncoder().encode(
      `grpc-status: 3\r\ngrpc-message: ${encodeURIComponent(PARSE_MESSAGE)}\r\n`,
    );
    const frame = new Uint8Array(5 + trailer.byteLength);
    frame[0] = 0x80;
    new DataView(frame.buffer).setUint32(1, trailer.byteLength);
    frame.set(trailer, 5);
    return new Response(frame, {
      status: 200,
      headers: { "content-type": contentType.split(";")[0]! },
    });
  }
  return undefined;
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
