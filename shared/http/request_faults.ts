// Replies for requests that are at fault before any handler runs: plain gRPC (which
// needs HTTP trailers Deno.serve cannot send) and bodies connect-es calls `internal`.
const MALFORMED = "request body is malformed";

/** A well-formed "trailers-only" UNIMPLEMENTED instead of a hung gRPC stream. */
export function grpcUnsupported(): Response {
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
export function frameworkRequestError(
  status: number,
  contentType: string,
  body: Uint8Array | null,
): Response | undefined {
  if (!body || body.byteLength > 2048) return undefined;
  let text = new TextDecoder().decode(body);
  try {
    text = decodeURIComponent(text.replace(/%(?![0-9A-Fa-f]{2})/g, "%25"));
  } catch { /* keep it encoded */ }
  text = text.toLowerCase();
  const isInternal = (status === 500 && text.includes('"code":"internal"')) ||
    (contentType.startsWith("application/grpc-web") && text.includes("grpc-status: 13"));
  if (!isInternal || !REQUEST_FAULTS.some((f) => text.includes(f))) return undefined;
  return malformedRequest(contentType);
}

/** `invalid_argument` in the request's own protocol. */
export function malformedRequest(contentType: string): Response {
  if (contentType.startsWith("application/grpc-web")) {
    // Trailers-only: status in the headers, no body.
    return new Response(null, {
      status: 200,
      headers: {
        "content-type": contentType.split(";")[0]!,
        "grpc-status": "3",
        "grpc-message": encodeURIComponent(MALFORMED),
      },
    });
  }
  return Response.json({ code: "invalid_argument", message: MALFORMED }, { status: 400 });
}
