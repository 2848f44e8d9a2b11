// Plain Connect RPCs that report how they ended, the RPC paths, and simulated clients
// (each with its own address) for the end-to-end and fault tests.
import { Code, ConnectError } from "@connectrpc/connect";

export interface RpcResult {
  /** HTTP status; 0 when no HTTP answer came (refused, reset, or our timeout). */
  status: number;
  /** "ok", the Connect error code, "timeout", or "network". */
  code: string;
  json: Record<string, unknown>;
  ms: number;
}

/** How a connect-es client call ended: "ok", or its Connect code's name ("ResourceExhausted"). */
export async function outcomeOf(call: Promise<unknown>): Promise<string> {
  return await call.then(() => "ok", (e) => Code[ConnectError.from(e).code]);
}

/** One Connect unary call in JSON over fetch; never throws. */
export async function rpc(
  baseUrl: string,
  path: string,
  body: unknown,
  o: { headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RpcResult> {
  const started = performance.now();
  const signal = AbortSignal.timeout(o.timeoutMs ?? 10_000);
  try {
    const res = await fetch(`${baseUrl}/${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...o.headers },
      body: JSON.stringify(body),
      signal,
    });
    const raw = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(raw);
    } catch { /* not JSON */ }
    const code = res.status === 200 ? "ok" : String(json.code ?? `http_${res.status}`);
    return { status: res.status, code, json, ms: performance.now() - started };
  } catch (err) {
    const timeout = signal.aborted;
    return {
      status: 0,
      code: timeout ? "timeout" : "network",
      json: { error: (err as Error).message },
      ms: performance.now() - started,
    };
  }
}

export const SIGNUP = "auth.v1.AuthService/SignupWithPhoneNumber";
export const VERIFY = "auth.v1.AuthService/VerifyPhoneNumber";
export const VALIDATE_LOGIN = "auth.v1.AuthService/ValidatePhoneNumberLogin";
export const GET_PROFILE = "auth.v1.AuthService/GetProfile";

let addressCounter = 0;
/**
 * Headers that give each simulated client its own address (honoured because the
 * fault stacks run auth-service with TRUSTED_PROXIES naming loopback), so per-client caps do not
 * mistake a test's many users for one abusive client.
 */
export function clientHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const n = ++addressCounter;
  return { "x-forwarded-for": `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, ...extra };
}

/** Runs `fn` over `items` with at most `limit` at once. */
export async function mapLimit<T, R>(
  items: T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
