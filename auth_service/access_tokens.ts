// Access tokens: short-lived JWTs other services verify against the published key set,
// with no call to auth-service. Keys come from the environment as JWKs; everything
// derived from them (imported keys, key ids, the key set document) is computed once at
// start, so issuing a token costs one signature.
import { Buffer } from "node:buffer";
import { createPrivateKey, sign } from "node:crypto";
import { toBase64Url } from "../shared/crypto.ts";
import type { KeyObject } from "node:crypto";
import { calculateJwkThumbprint, compactVerify, exportJWK, generateKeyPair, importJWK } from "jose";
import type { CryptoKey, JWK } from "jose";
import { ConfigError } from "../shared/config.ts";
import type { ConfigReader } from "../shared/config.ts";

export type SigningAlgorithm = "EdDSA" | "ES256";

export interface JwtConfig {
  /** The private JWK tokens are signed with, as given. */
  signingKey: JWK;
  /** Extra public JWKs still published, e.g. the previous signing key during a rotation. */
  verifyKeys: JWK[];
  issuer: string;
  audience: string | undefined;
  ttlSeconds: number;
}

/** Every variable readJwtConfig reads. */
export const JWT_ENV = [
  "JWT_SIGNING_KEY",
  "JWT_VERIFY_KEYS",
  "JWT_ISSUER",
  "JWT_AUDIENCE",
  "ACCESS_TOKEN_TTL_SECONDS",
] as const;

/** Members that only a private or symmetric JWK has. */
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] as const;

/** Reads the JWT variables; checks shape only (importing the keys is async). */
export function readJwtConfig(c: ConfigReader): JwtConfig {
  const signingKey = parseJwk("JWT_SIGNING_KEY", c.string("JWT_SIGNING_KEY"));
  checkKey("JWT_SIGNING_KEY", signingKey, "private");
  const verifyKeys = parseKeyList("JWT_VERIFY_KEYS", c.optional("JWT_VERIFY_KEYS"));
  verifyKeys.forEach((k, i) => checkKey(`JWT_VERIFY_KEYS`, k, "public", i));
  return {
    signingKey,
    verifyKeys,
    issuer: c.string("JWT_ISSUER", "phone-auth"),
    audience: c.optional("JWT_AUDIENCE"),
    ttlSeconds: c.int("ACCESS_TOKEN_TTL_SECONDS", 600, 60, 86_400),
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

// JSON.parse's message quotes the input, which is a secret here: never pass it on.
function parseJson(variable: string, raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    throw new ConfigError(variable, "is not valid JSON");
  }
}

function parseJwk(variable: string, raw: string): JWK {
  const v = parseJson(variable, raw);
  if (!isObject(v)) throw new ConfigError(variable, "must be a JWK (a JSON object)");
  return v as JWK;
}

function parseKeyList(variable: string, raw: string | undefined): JWK[] {
  if (raw === undefined) return [];
  const v = parseJson(variable, raw);
  const list = Array.isArray(v) ? v : isObject(v) && Array.isArray(v.keys) ? v.keys : undefined;
  if (!list) {
    throw new ConfigError(variable, 'must be a JSON array of JWKs or a key set {"keys": [...]}');
  }
  return list.map((k, i) => {
    if (!isObject(k)) throw new ConfigError(variable, `key ${i} is not a JWK (a JSON object)`);
    return k as JWK;
  });
}

/** The algorithm a key's type and curve call for; anything else is refused. */
function algorithmOf(variable: string, jwk: JWK, where: string): SigningAlgorithm {
  if (jwk.kty === "oct") {
    throw new ConfigError(
      variable,
      `${where}is a symmetric key; use an Ed25519 (OKP) or P-256 (EC) key pair`,
    );
  }
  const alg: SigningAlgorithm | undefined = jwk.kty === "OKP" && jwk.crv === "Ed25519"
    ? "EdDSA"
    : jwk.kty === "EC" && jwk.crv === "P-256"
    ? "ES256"
    : undefined;
  if (!alg) {
    throw new ConfigError(
      variable,
      `${where}must be an Ed25519 (kty OKP) or P-256 (kty EC) key, got kty ${
        JSON.stringify(jwk.kty ?? null)
      } crv ${JSON.stringify(jwk.crv ?? null)}`,
    );
  }
  if (jwk.alg !== undefined && jwk.alg !== alg) {
    throw new ConfigError(variable, `${where}has alg ${JSON.stringify(jwk.alg)}, expected ${alg}`);
  }
  if (jwk.use !== undefined && jwk.use !== "sig") {
    throw new ConfigError(variable, `${where}has use ${JSON.stringify(jwk.use)}, expected "sig"`);
  }
  return alg;
}

function checkKey(variable: string, jwk: JWK, kind: "private" | "public", index?: number): void {
  const where = index === undefined ? "" : `key ${index} `;
  algorithmOf(variable, jwk, where);
  const hasPrivate = PRIVATE_MEMBERS.some((m) => m in jwk);
  if (kind === "private" && typeof jwk.d !== "string") {
    throw new ConfigError(variable, `${where}must be a private key (it has no "d")`);
  }
  if (kind === "public" && hasPrivate) {
    throw new ConfigError(
      variable,
      `${where}contains private key material; list public keys only`,
    );
  }
  if (jwk.kid !== undefined && (typeof jwk.kid !== "string" || jwk.kid === "")) {
    throw new ConfigError(variable, `${where}has an empty or non-string kid`);
  }
}

/** The public members a published key keeps; everything else is dropped. */
function publicPart(jwk: JWK): JWK {
  const out: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
  if (jwk.y !== undefined) out.y = jwk.y;
  return out;
}

async function published(variable: string, jwk: JWK, where: string): Promise<JWK> {
  const alg = algorithmOf(variable, jwk, where);
  const pub = publicPart(jwk);
  // A key with bad coordinates must stop the service now, not fail every verification.
  try {
    await importJWK(pub, alg);
  } catch {
    throw new ConfigError(variable, `${where}is not a valid ${alg} public key`);
  }
  const kid = jwk.kid ?? await calculateJwkThumbprint(pub, "sha256");
  return { ...pub, kid, alg, use: "sig" };
}

export interface AccessTokenSubject {
  userId: string;
  sessionId: string;
  /** E.164. */
  phoneNumber: string;
}

export interface IssuedAccessToken {
  token: string;
  /** Seconds until it expires. */
  expiresIn: number;
}

export class AccessTokens {
  /** The encoded protected header, the same for every token. */
  private readonly header: string;

  private constructor(
    /** The private key, for node:crypto, which signs in the calling thread. */
    private readonly signer: KeyObject,
    private readonly kid: string,
    readonly algorithm: SigningAlgorithm,
    private readonly config: JwtConfig,
    /** The body of GET /.well-known/jwks.json. */
    readonly jwksJson: string,
  ) {
    this.header = toBase64Url(JSON.stringify({ alg: algorithm, kid, typ: "JWT" }));
  }

  /** Imports the keys and builds the key set; a key that cannot sign stops the start. */
  static async create(config: JwtConfig): Promise<AccessTokens> {
    const algorithm = algorithmOf("JWT_SIGNING_KEY", config.signingKey, "");
    const signing = await published("JWT_SIGNING_KEY", config.signingKey, "");
    let signer: KeyObject;
    try {
      const { kid: _kid, ...jwk } = config.signingKey;
      // jose checks the key fits the algorithm; node:crypto then holds it for signing.
      await importJWK({ ...jwk, alg: algorithm }, algorithm);
      signer = createPrivateKey({ key: jwk as never, format: "jwk" });
    } catch {
      throw new ConfigError("JWT_SIGNING_KEY", `is not a valid ${algorithm} private key`);
    }
    const keys = [signing];
    for (const [i, k] of config.verifyKeys.entries()) {
      keys.push(await published("JWT_VERIFY_KEYS", k, `key ${i} `));
    }
    const kids = new Set<string>();
    for (const k of keys) {
      if (kids.has(k.kid!)) {
        throw new ConfigError("JWT_VERIFY_KEYS", `repeats the key id ${JSON.stringify(k.kid)}`);
      }
      kids.add(k.kid!);
    }
    const tokens = new AccessTokens(
      signer,
      signing.kid!,
      algorithm,
      config,
      JSON.stringify({ keys }),
    );
    await tokens.checkPair(signing);
    return tokens;
  }

  /**
   * Signs a token for the session (a compact JWS, RFC 7515). `now` is the issue time
   * (the clock by default). node:crypto signs in the calling thread, at about a third
   * of the cost of WebCrypto's round trip through a worker thread.
   */
  issue(subject: AccessTokenSubject, options: { now?: Date } = {}): Promise<IssuedAccessToken> {
    const iat = Math.floor((options.now ?? new Date()).getTime() / 1000);
    const claims: Record<string, string | number> = {
      sid: subject.sessionId,
      phone_number: subject.phoneNumber,
      iss: this.config.issuer,
      sub: subject.userId,
    };
    if (this.config.audience !== undefined) claims.aud = this.config.audience;
    claims.iat = iat;
    claims.exp = iat + this.config.ttlSeconds;
    const input = `${this.header}.${toBase64Url(JSON.stringify(claims))}`;
    const signature = this.algorithm === "EdDSA"
      ? sign(null, Buffer.from(input), this.signer)
      : sign("sha256", Buffer.from(input), { key: this.signer, dsaEncoding: "ieee-p1363" });
    return Promise.resolve({
      token: `${input}.${toBase64Url(signature)}`,
      expiresIn: this.config.ttlSeconds,
    });
  }

  /**
   * A private key whose "x"/"y" belong to another key would publish a useless key set:
   * a token issued as every token is must verify against the published public part.
   */
  private async checkPair(signing: JWK): Promise<void> {
    const pub = await importJWK(publicPart(signing), this.algorithm) as CryptoKey;
    const { token } = await this.issue({ userId: "probe", sessionId: "probe", phoneNumber: "" });
    try {
      await compactVerify(token, pub, { algorithms: [this.algorithm] });
    } catch {
      throw new ConfigError(
        "JWT_SIGNING_KEY",
        "has a public part that does not match its private key",
      );
    }
  }
}

/** A fresh Ed25519 private JWK (JSON), for the dev launcher only. */
export async function generateDevSigningKey(): Promise<string> {
  const { privateKey } = await generateKeyPair("EdDSA", { extractable: true });
  return JSON.stringify(await exportJWK(privateKey));
}
