// Traces through the OpenTelemetry API only: Deno's built-in OpenTelemetry
// (OTEL_DENO=true) registers the tracer provider, the context manager and the W3C
// trace-context propagator; without it every call here is a cheap no-op. The context
// crosses the bus as `traceparent`/`tracestate` AMQP headers, written when a message is
// put in the outbox and read by the consumer. Attributes pass a guard first, so no code,
// token or phone number can reach a collector whatever a caller passes.
import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import type {
  AttributeValue,
  Context,
  Span,
  SpanAttributes,
  TextMapGetter,
  TextMapSetter,
} from "@opentelemetry/api";

import type { MessageHandler } from "./bus.ts";

export { SpanKind };
export type { Context };

/** AMQP message headers as amqplib reads and writes them. */
export type MessageHeaders = Record<string, unknown>;

const setter: TextMapSetter<MessageHeaders> = {
  set(carrier, key, value) {
    carrier[key] = value;
  },
};

const decoder = new TextDecoder();

const getter: TextMapGetter<MessageHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get(carrier, key) {
    const v = carrier[key];
    if (typeof v === "string") return v;
    // A header may arrive as a byte array ("x" field) from other publishers.
    if (v instanceof Uint8Array) return decoder.decode(v);
    return undefined;
  },
};

/**
 * The trace headers of `ctx` (the active context by default): what the outbox stores
 * with a message so the relay can publish it in the same trace. Empty when not tracing.
 */
export function traceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: MessageHeaders = {};
  propagation.inject(ctx, carrier, setter);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(carrier)) if (typeof v === "string") out[k] = v;
  return out;
}

/** Writes the trace headers of `ctx` into `headers` and returns it. */
export function injectTraceHeaders(
  headers: MessageHeaders,
  ctx: Context = context.active(),
): MessageHeaders {
  propagation.inject(ctx, headers, setter);
  return headers;
}

/**
 * The context a consumer continues: the sender's trace when the headers carry one,
 * else a fresh root (never whatever happens to be active in the consumer).
 */
export function extractTraceContext(headers: MessageHeaders | undefined): Context {
  if (!headers) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, headers, getter);
}

/** The W3C trace id of the active span, for logs; undefined when not tracing. */
export function activeTraceId(): string | undefined {
  const sc = trace.getSpanContext(context.active());
  return sc && trace.isSpanContextValid(sc) ? sc.traceId : undefined;
}

// ---------------------------------------------------------------------------------
// The attribute guard
// ---------------------------------------------------------------------------------

export const REDACTED = "[redacted]";

/** Key words that name a secret or a number; an attribute whose key has one is dropped. */
const SENSITIVE_KEY_WORDS = new Set([
  "otp",
  "code",
  "passcode",
  "pin",
  "token",
  "secret",
  "password",
  "authorization",
  "cookie",
  "hmac",
  "mac",
  "key",
  "jwt",
  "phone",
  "number",
  "msisdn",
]);

/** Well-known keys that contain such a word and are safe. */
const SAFE_KEYS = new Set([
  "http.response.status_code",
  "rpc.grpc.status_code",
  "rpc.connect_rpc.error_code",
  "messaging.rabbitmq.destination.routing_key",
  "otp.purpose",
  "phone.country",
]);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const HEX_ID = /^[0-9a-f]{16,64}$/i;
/** Six digits in a row, however separated: a code, or part of a phone number. */
const DIGIT_RUN = /\d(?:[\s().-]*\d){5,}/;
/** Long base64url-ish words: session tokens, JWT parts, keys. */
const TOKEN_LIKE = /[A-Za-z0-9_-]{32,}|eyJ[A-Za-z0-9_-]{8,}/;

export function isSensitiveKey(key: string): boolean {
  if (SAFE_KEYS.has(key)) return false;
  return key.toLowerCase().split(/[._\-\s]+/).some((w) => SENSITIVE_KEY_WORDS.has(w));
}

function safeString(v: string): string {
  if (UUID.test(v) || HEX_ID.test(v)) return v;
  return DIGIT_RUN.test(v) || TOKEN_LIKE.test(v) ? REDACTED : v;
}

function safeValue(v: AttributeValue): AttributeValue {
  if (typeof v === "string") return safeString(v);
  if (Array.isArray(v)) {
    return v.map((x) => typeof x === "string" ? safeString(x) : x) as AttributeValue;
  }
  // A number as long as a code or a number is treated like one.
  if (typeof v === "number" && Number.isInteger(v) && Math.abs(v) >= 100_000) return REDACTED;
  return v;
}

/**
 * `attributes` without keys that name a secret or a number, and with any value that
 * looks like a code, a phone number or a token replaced by "[redacted]".
 */
export function safeAttributes(attributes: SpanAttributes): SpanAttributes {
  const out: SpanAttributes = {};
  for (const [k, v] of Object.entries(attributes)) {
    if (v === undefined || isSensitiveKey(k)) continue;
    out[k] = safeValue(v);
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------------

/** The part of a span a caller may touch: attributes go through the guard. */
export interface GuardedSpan {
  setAttributes(attributes: SpanAttributes): void;
  /** The W3C trace id; all zeros when not tracing. */
  readonly traceId: string;
}

export interface SpanOptions {
  kind?: SpanKind;
  /** The context to continue (a consumer's extractTraceContext); the active one by default. */
  parent?: Context;
}

const tracer = trace.getTracer("phone-auth");

/**
 * Runs `fn` inside a span named `name` (an operation, e.g. "otp.issue"), active for
 * everything `fn` awaits. A failure marks the span as an error with the error's class
 * name only: messages may quote input.
 */
export function withSpan<T>(
  name: string,
  attributes: SpanAttributes,
  fn: (span: GuardedSpan) => Promise<T> | T,
  options: SpanOptions = {},
): Promise<T> {
  const parent = options.parent ?? context.active();
  return tracer.startActiveSpan(
    name,
    { kind: options.kind ?? SpanKind.INTERNAL },
    parent,
    async (span: Span) => {
      // The guard costs a few microseconds a span (its patterns run over every value):
      // only a span that records anything is given attributes. (Set after the start,
      // they are not among what a sampler sees.)
      if (span.isRecording()) span.setAttributes(safeAttributes(attributes));
      const guarded: GuardedSpan = {
        setAttributes: (a) => {
          if (span.isRecording()) span.setAttributes(safeAttributes(a));
        },
        traceId: span.spanContext().traceId,
      };
      try {
        return await fn(guarded);
      } catch (err) {
        const type = err instanceof Error ? err.name : typeof err;
        span.setAttributes({ "error.type": type });
        span.setStatus({ code: SpanStatusCode.ERROR, message: type });
        throw err;
      } finally {
        span.end();
      }
    },
  );
}

/** Semantic-convention attributes of a RabbitMQ publish or delivery. */
export function messagingAttributes(
  operation: "publish" | "process",
  m: { exchange: string; routingKey: string; messageId?: string },
): SpanAttributes {
  return {
    "messaging.system": "rabbitmq",
    "messaging.operation.type": operation,
    "messaging.destination.name": m.exchange,
    "messaging.rabbitmq.destination.routing_key": m.routingKey,
    ...(m.messageId ? { "messaging.message.id": m.messageId } : {}),
  };
}

/**
 * `handler` run inside a consumer span named `name`, continuing the trace the message
 * carries in its headers.
 */
export function tracedHandler(
  name: string,
  queue: string,
  handler: MessageHandler,
): MessageHandler {
  return (m) =>
    withSpan(name, {
      "messaging.system": "rabbitmq",
      "messaging.operation.type": "process",
      "messaging.destination.name": queue,
      ...(m.messageId ? { "messaging.message.id": m.messageId } : {}),
      "messaging.rabbitmq.delivery_count": m.deliveryCount,
    }, () =>
      handler(m), { kind: SpanKind.CONSUMER, parent: extractTraceContext(m.headers) });
}
