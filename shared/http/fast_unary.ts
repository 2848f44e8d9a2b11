// The common Connect call, served without connect-es's general machinery: a unary
// POST in the Connect protocol, JSON or binary, uncompressed, with a known length and
// no deadline header. It runs the very steps connect-es runs for such a call (its own
// handler context, serialization, interceptors, error encoding), only without the
// universal request/response adapters, URL parsing and async-iterable plumbing that
// cost most of the time of a tiny call. Anything else is left to connect-es.
import { Code, ConnectError, createMethodImplSpec } from "@connectrpc/connect";
import type {
  ConnectRouter,
  ConnectRouterOptions,
  ContextValues,
  HandlerContext,
  MethodImplSpec,
  UnaryResponse,
} from "@connectrpc/connect";
import {
  createMethodSerializationLookup,
  getJsonOptions,
  mergeNonProtocolHeaders,
  validateUniversalHandlerOptions,
} from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  contentTypeUnaryJson,
  contentTypeUnaryProto,
  errorToJsonBytes,
  trailerMux,
} from "@connectrpc/connect/protocol-connect";
import { create, toJsonString } from "@bufbuild/protobuf";
import type { DescMethod, DescService } from "@bufbuild/protobuf";

/** Runs before the body is read; throwing refuses the call. */
export type RequestGate = (context: HandlerContext) => void | Promise<void>;

type UnarySpec = Extract<MethodImplSpec, { kind: "unary" }>;
type Options = ReturnType<typeof validateUniversalHandlerOptions>;
type Serialization = ReturnType<typeof createMethodSerializationLookup>;

/** One unary method as the fast path serves it. */
export interface FastMethod {
  spec: UnarySpec;
  opt: Options;
  serialization: Serialization;
  /** The JSON reply as text, exactly as connect-es would encode it. */
  jsonText: (message: unknown) => string;
}

/**
 * What the bridge turns into a Response, the same shape for both paths. A JSON reply
 * of the fast path is text: Deno writes a string body without the copy it makes of a
 * byte array, and encodes it on the way out. Deno adds Content-Length for either.
 */
export interface UnaryReply {
  status: number;
  header: Headers | [string, string][];
  body: Uint8Array | string;
}

/**
 * Wraps `router` so that every unary method registered through it is also recorded
 * for the fast path, with the options connect-es would apply to it.
 */
export function recordingRouter(
  router: ConnectRouter,
  base: ConnectRouterOptions,
  into: Map<string, FastMethod>,
  gates: Record<string, RequestGate> = {},
): ConnectRouter {
  // A gate is a per-service option; per-service options must restate the protocols,
  // which connect-es otherwise turns all on.
  const withGate = (service: DescService, options?: ConnectRouterOptions) => {
    const requestGate = gates[service.typeName];
    if (requestGate === undefined) return options;
    const { grpc, grpcWeb, connect } = base;
    return { grpc, grpcWeb, connect, ...options, requestGate };
  };
  const record = (method: DescMethod, spec: MethodImplSpec, options?: ConnectRouterOptions) => {
    if (method.methodKind !== "unary") return;
    // Per-call options replace the router's, as connect-es merges them.
    const merged = options ? { ...validateUniversalHandlerOptions(base), ...options } : base;
    if (merged.connect === false) return;
    const opt = validateUniversalHandlerOptions(merged);
    // The version check's messages are connect-es's own; leave such methods to it.
    if (opt.requireConnectProtocolHeader) return;
    const serialization = createMethodSerializationLookup(
      method,
      opt.binaryOptions,
      opt.jsonOptions,
      opt,
    );
    into.set(`/${method.parent.typeName}/${method.name}`, {
      spec: spec as UnarySpec,
      opt,
      serialization,
      jsonText: jsonWriter(method, opt, serialization),
    });
  };
  const wrapped: ConnectRouter = {
    get handlers() {
      return router.handlers;
    },
    service(service, implementation, given) {
      const options = withGate(service, given);
      router.service(service, implementation, options);
      for (const method of (service as DescService).methods) {
        record(method, methodSpec(service, method, implementation), options);
      }
      return wrapped;
    },
    rpc(method, impl, given) {
      const options = withGate(method.parent, given);
      router.rpc(method, impl, options);
      record(method, createMethodImplSpec(method, impl), options);
      return wrapped;
    },
  };
  return wrapped;
}

/**
 * connect-es's JSON serializer for a method's output, stopping short of the UTF-8
 * encoding: its options, its error, and its size limit (text too long to be surely
 * within writeMaxBytes goes through connect-es's own serializer, which checks).
 */
function jsonWriter(method: DescMethod, opt: Options, serialization: Serialization) {
  const options = getJsonOptions(opt.jsonOptions);
  const schema = method.output;
  return (message: unknown): string => {
    let text: string;
    try {
      text = toJsonString(schema, message as never, options);
    } catch (e) {
      throw ConnectError.from(e, Code.Internal);
    }
    if (text.length * 3 > opt.writeMaxBytes) {
      return new TextDecoder().decode(serialization.getO(false).serialize(message as never));
    }
    return text;
  };
}

/** The spec connect-es builds for one method of a service implementation. */
function methodSpec(service: DescService, method: DescMethod, impl: object): MethodImplSpec {
  let fn = (impl as Record<string, unknown>)[method.localName];
  if (typeof fn == "function") {
    fn = fn.bind(impl);
  } else {
    const message = `${service.typeName}.${method.name} is not implemented`;
    fn = function unimplemented() {
      throw new ConnectError(message, Code.Unimplemented);
    };
  }
  return createMethodImplSpec(method, fn as never);
}

/**
 * The declared body length when the fast path serves this request; -1 sends it to
 * connect-es.
 */
export function fastPathLength(req: Request, contentType: string): number {
  if (req.method !== "POST") return -1;
  if (!UNARY_CONTENT_TYPE.test(contentType)) return -1;
  const h = req.headers;
  const encoding = h.get("content-encoding");
  if (encoding !== null && encoding !== "identity") return -1;
  if (h.get("connect-timeout-ms") !== null) return -1;
  const length = h.get("content-length");
  return length !== null && DIGITS.test(length) ? Number(length) : -1;
}

const UNARY_CONTENT_TYPE = /^application\/(?:json(?:; ?charset=utf-?8)?|proto)$/i;
const DIGITS = /^\d{1,15}$/;

/**
 * The handler context of one fast call. connect-es builds a deadline signal, a linked
 * abort controller and three header copies for every call; here each is made the
 * first time someone looks at it, and behaves as connect-es's from then on.
 */
class LazyContext {
  readonly requestMethod = "POST";
  readonly protocolName = "connect";
  readonly service: DescService;
  #controller?: AbortController;
  #requestHeader?: Headers;
  #responseHeader?: Headers;
  #responseTrailer?: Headers;
  constructor(
    readonly method: DescMethod,
    readonly url: string,
    readonly values: ContextValues,
    private readonly rawHeader: Headers,
    private readonly contentType: string,
  ) {
    this.service = method.parent;
  }
  timeoutMs(): number | undefined {
    return undefined;
  }
  get signal(): AbortSignal {
    return (this.#controller ??= new AbortController()).signal;
  }
  get requestHeader(): Headers {
    return this.#requestHeader ??= copyOf(this.rawHeader);
  }
  get responseHeader(): Headers {
    if (this.#responseHeader === undefined) {
      this.#responseHeader = new Headers();
      this.#responseHeader.append("content-type", this.contentType);
    }
    return this.#responseHeader;
  }
  get responseTrailer(): Headers {
    return this.#responseTrailer ??= new Headers();
  }
  abort(reason?: unknown): void {
    const c = this.#controller;
    if (c !== undefined && !c.signal.aborted) c.abort(reason);
  }
  /** The reply's headers; plain pairs when nobody touched them. */
  replyHeader(contentType: string): Headers | [string, string][] {
    const header = this.#responseHeader;
    if (header === undefined) return [["content-type", contentType]];
    const trailer = this.#responseTrailer;
    return trailer === undefined ? header : trailerMux(header, trailer);
  }
}

/**
 * invokeUnaryImplementation of connect-es, over a LazyContext. The request, context and
 * response objects are class instances (getters on the prototype, nothing allocated
 * per call but the instance); an interceptor that passes on a copy without them still
 * gets the call's own signal and headers.
 */
async function invoke(m: FastMethod, ctx: LazyContext, input: unknown): Promise<unknown> {
  const { spec, opt } = m;
  let made: FastResponse | undefined;
  const last = async (req: UnaryRequestLike) => {
    const out = await spec.impl(req.message as never, new ImplContext(ctx, req));
    return made = new FastResponse(ctx, create(spec.method.output, out), spec.method);
  };
  let next = last as (req: UnaryRequestLike) => Promise<UnaryResponse>;
  const interceptors = opt.interceptors;
  for (let i = interceptors.length - 1; i >= 0; i--) {
    next = (interceptors[i] as unknown as (n: typeof next) => typeof next)(next);
  }
  const res = await next(new FastRequest(ctx, input, spec.method));
  if (res !== made) {
    // An interceptor answered with its own headers: adopt them as connect-es does.
    copyHeaders(res.header, ctx.responseHeader);
    copyHeaders(res.trailer, ctx.responseTrailer);
  }
  return res.message;
}

interface UnaryRequestLike {
  stream: false;
  message: unknown;
  method: DescMethod;
  requestMethod: string;
  url: string;
  readonly signal: AbortSignal;
  readonly header: Headers;
  service: DescService;
  contextValues: ContextValues;
}

class FastRequest implements UnaryRequestLike {
  readonly stream = false;
  readonly requestMethod: string;
  readonly url: string;
  readonly service: DescService;
  readonly contextValues: ContextValues;
  constructor(
    private readonly ctx: LazyContext,
    readonly message: unknown,
    readonly method: DescMethod,
  ) {
    this.requestMethod = ctx.requestMethod;
    this.url = ctx.url;
    this.service = ctx.service;
    this.contextValues = ctx.values;
  }
  get signal(): AbortSignal {
    return this.ctx.signal;
  }
  get header(): Headers {
    return this.ctx.requestHeader;
  }
}

/** What the implementation sees: connect-es merges the request into the context. */
class ImplContext {
  readonly method: DescMethod;
  readonly service: DescService;
  readonly requestMethod: string;
  readonly protocolName: string;
  readonly url: string;
  readonly values: ContextValues;
  constructor(private readonly ctx: LazyContext, private readonly req: UnaryRequestLike) {
    this.method = ctx.method;
    this.service = req.service ?? ctx.service;
    this.requestMethod = ctx.requestMethod;
    this.protocolName = ctx.protocolName;
    this.url = ctx.url;
    this.values = req.contextValues ?? ctx.values;
  }
  get signal(): AbortSignal {
    return this.req.signal ?? this.ctx.signal;
  }
  get requestHeader(): Headers {
    return this.req.header ?? this.ctx.requestHeader;
  }
  get responseHeader(): Headers {
    return this.ctx.responseHeader;
  }
  get responseTrailer(): Headers {
    return this.ctx.responseTrailer;
  }
  timeoutMs(): number | undefined {
    return undefined;
  }
  abort(reason?: unknown): void {
    this.ctx.abort(reason);
  }
}

class FastResponse {
  readonly stream = false;
  readonly service: DescService;
  constructor(
    private readonly ctx: LazyContext,
    readonly message: unknown,
    readonly method: DescMethod,
  ) {
    this.service = method.parent;
  }
  get header(): Headers {
    return this.ctx.responseHeader;
  }
  get trailer(): Headers {
    return this.ctx.responseTrailer;
  }
}

/**
 * A mutable copy, as connect-es gives a handler. Appending each entry costs a fraction
 * of `new Headers(headers)`, which converts its argument as a generic iterable.
 */
function copyOf(headers: Headers): Headers {
  const copy = new Headers();
  headers.forEach((value, name) => copy.append(name, value));
  return copy;
}

function copyHeaders(from: Headers, to: Headers): void {
  if (from === to) return;
  to.forEach((_, key) => to.delete(key));
  from.forEach((value, key) => to.set(key, value));
}

/** Serves one fast-path call, step for step as connect-es's Connect unary handler. */
export async function serveFast(
  m: FastMethod,
  req: Request,
  call: { url: string; contentType: string; length: number },
  contextValues: ContextValues,
): Promise<UnaryReply> {
  const { opt, spec } = m;
  const { contentType, length } = call;
  const binary = contentType.charCodeAt(12) === 0x70 || contentType.charCodeAt(12) === 0x50;
  const replyType = binary ? contentTypeUnaryProto : contentTypeUnaryJson;
  const context = new LazyContext(spec.method, call.url, contextValues, req.headers, replyType);
  let status = 200;
  let body: Uint8Array | string;
  let type = replyType;
  try {
    if (opt.requestGate !== undefined) await opt.requestGate(context);
    const input = m.serialization.getI(binary).parse(await readBody(req, length, opt.readMaxBytes));
    const output = await invoke(m, context, input);
    body = binary ? m.serialization.getO(true).serialize(output as never) : m.jsonText(output);
  } catch (e) {
    context.abort(e);
    const error = e instanceof ConnectError
      ? e
      : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
    status = codeToHttpStatus(error.code);
    type = contentTypeUnaryJson;
    context.responseHeader.set("Content-Type", contentTypeUnaryJson);
    if (!error.isWireError) mergeNonProtocolHeaders(context.responseHeader, error.metadata);
    body = errorToJsonBytes(error, opt.jsonOptions);
  } finally {
    context.abort();
  }
  return { status, header: context.replyHeader(type), body };
}

/** The body, refused unread when its declared length is over the limit. */
async function readBody(req: Request, hint: number, readMaxBytes: number): Promise<Uint8Array> {
  if (hint > readMaxBytes) {
    throw new ConnectError(
      `message size ${hint} is larger than configured readMaxBytes ${readMaxBytes}`,
      Code.ResourceExhausted,
    );
  }
  // Not req.body: touching the stream turns off Deno's whole-body read.
  const bytes = await req.bytes();
  if (bytes.byteLength !== hint) {
    throw new ConnectError(
      `protocol error: promised ${hint} bytes, received ${bytes.byteLength}`,
      Code.InvalidArgument,
    );
  }
  return bytes;
}
