import assert from "node:assert/strict";
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  exportJWK,
  generateKeyPair,
  jwtVerify,
} from "jose";
import type { JSONWebKeySet, JWK } from "jose";
import { ConfigError, ConfigReader } from "../shared/config.ts";
import { AccessTokens, generateDevSigningKey, readJwtConfig } from "./access_tokens.ts";

// RFC 8037 appendix A.1/A.3: an Ed25519 key and its RFC 7638 thumbprint.
const RFC8037_KEY = {
  kty: "OKP",
  crv: "Ed25519",
  d: "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
  x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
};
const RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

const SUBJECT = {
  userId: "5b0c3f1e-8a43-4c55-9d53-0e7e0b7f3a11",
  sessionId: "0d7c8a3b-2f1e-4e9a-bb8c-7a6d5e4f3c21",
  phoneNumber: "+14155550123",
};

async function privateJwk(alg: "EdDSA" | "ES256"): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return exportJWK(privateKey);
}

const publicOf = ({ d: _d, ...pub }: JWK): JWK => pub;

function reader(env: Record<string, string>): ConfigReader {
  return new ConfigReader((name) => env[name]);
}

async function tokensFor(env: Record<string, string>): Promise<AccessTokens> {
  return await AccessTokens.create(readJwtConfig(reader(env)));
}

function keySet(tokens: AccessTokens): JSONWebKeySet {
  return JSON.parse(tokens.jwksJson);
}

function assertConfigError(fn: () => unknown, variable: string, pattern: RegExp): void {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.variable, variable);
    assert.match(err.message, pattern);
    return true;
  });
}

async function assertConfigErrorAsync(
  fn: () => Promise<unknown>,
  variable: string,
  pattern: RegExp,
): Promise<void> {
  await assert.rejects(fn, (err) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.variable, variable);
    assert.match(err.message, pattern);
    return true;
  });
}

Deno.test("an access token verifies against the published key set with the claims of the session", async () => {
  const tokens = await tokensFor({ JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")) });
  const now = new Date();
  const { token, expiresIn } = await tokens.issue(SUBJECT, { now });
  assert.equal(expiresIn, 600);
  const { payload, protectedHeader } = await jwtVerify(
    token,
    createLocalJWKSet(keySet(tokens)),
    { issuer: "phone-auth", algorithms: ["EdDSA"] },
  );
  const iat = Math.floor(now.getTime() / 1000);
  assert.deepEqual(payload, {
    iss: "phone-auth",
    sub: SUBJECT.userId,
    sid: SUBJECT.sessionId,
    phone_number: SUBJECT.phoneNumber,
    iat,
    exp: iat + 600,
  });
  assert.equal(protectedHeader.alg, "EdDSA");
  assert.equal(protectedHeader.kid, keySet(tokens).keys[0]!.kid);
});

Deno.test("issuer, audience and lifetime follow their variables", async () => {
  const tokens = await tokensFor({
    JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")),
    JWT_ISSUER: "https://auth.example",
    JWT_AUDIENCE: "api.example",
    ACCESS_TOKEN_TTL_SECONDS: "120",
  });
  const { token, expiresIn } = await tokens.issue(SUBJECT);
  assert.equal(expiresIn, 120);
  const jwks = createLocalJWKSet(keySet(tokens));
  const { payload } = await jwtVerify(token, jwks, {
    issuer: "https://auth.example",
    audience: "api.example",
  });
  assert.equal(payload.aud, "api.example");
  assert.equal(payload.exp! - payload.iat!, 120);
  await assert.rejects(
    jwtVerify(token, jwks, { audience: "other.example" }),
    errors.JWTClaimValidationFailed,
  );
});

Deno.test("a token without a configured audience carries no aud claim", async () => {
  const tokens = await tokensFor({ JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")) });
  const { payload } = await jwtVerify(
    (await tokens.issue(SUBJECT)).token,
    createLocalJWKSet(keySet(tokens)),
  );
  assert.equal("aud" in payload, false);
});

Deno.test("an expired access token is refused", async () => {
  const tokens = await tokensFor({ JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")) });
  const { token } = await tokens.issue(SUBJECT, { now: new Date(Date.now() - 601_000) });
  await assert.rejects(jwtVerify(token, createLocalJWKSet(keySet(tokens))), errors.JWTExpired);
});

Deno.test("a tampered access token is refused", async () => {
  const tokens = await tokensFor({ JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")) });
  const jwks = createLocalJWKSet(keySet(tokens));
  const [header, payload, signature] = (await tokens.issue(SUBJECT)).token.split(".");
  const claims = JSON.parse(new TextDecoder().decode(decodeBase64Url(payload!)));
  claims.phone_number = "+14155550199";
  const forged = [header, encodeBase64Url(JSON.stringify(claims)), signature].join(".");
  await assert.rejects(jwtVerify(forged, jwks), errors.JWSSignatureVerificationFailed);
  const sig = decodeBase64Url(signature!);
  sig[0]! ^= 1;
  const flipped = [header, payload, encodeBase64Url(sig)].join(".");
  await assert.rejects(jwtVerify(flipped, jwks), errors.JWSSignatureVerificationFailed);
});

Deno.test("a token signed by a key outside the key set is refused", async () => {
  const ours = await tokensFor({ JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")) });
  const stranger = await tokensFor({
    JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")),
  });
  const { token } = await stranger.issue(SUBJECT);
  await assert.rejects(jwtVerify(token, createLocalJWKSet(keySet(ours))), errors.JWKSNoMatchingKey);
});

Deno.test("after a rotation tokens of the old and the new signing key both verify", async () => {
  const oldKey = await privateJwk("EdDSA");
  const before = await tokensFor({ JWT_SIGNING_KEY: JSON.stringify(oldKey) });
  const oldToken = (await before.issue(SUBJECT)).token;
  const after = await tokensFor({
    JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")),
    JWT_VERIFY_KEYS: JSON.stringify({ keys: [publicOf(oldKey)] }),
  });
  const newToken = (await after.issue(SUBJECT)).token;
  const jwks = createLocalJWKSet(keySet(after));
  assert.equal(keySet(after).keys.length, 2);
  assert.equal((await jwtVerify(oldToken, jwks)).payload.sid, SUBJECT.sessionId);
  assert.equal((await jwtVerify(newToken, jwks)).payload.sid, SUBJECT.sessionId);
  assert.notEqual(decodeProtectedHeader(oldToken).kid, decodeProtectedHeader(newToken).kid);
});

Deno.test("JWT_VERIFY_KEYS also accepts a plain array of keys", async () => {
  const extra = publicOf(await privateJwk("ES256"));
  const tokens = await tokensFor({
    JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")),
    JWT_VERIFY_KEYS: JSON.stringify([extra]),
  });
  const [, published] = keySet(tokens).keys;
  assert.equal(published!.x, extra.x);
  assert.equal(published!.alg, "ES256");
});

Deno.test("a P-256 signing key issues ES256 tokens that verify", async () => {
  const tokens = await tokensFor({ JWT_SIGNING_KEY: JSON.stringify(await privateJwk("ES256")) });
  assert.equal(tokens.algorithm, "ES256");
  const { token } = await tokens.issue(SUBJECT);
  const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(keySet(tokens)), {
    algorithms: ["ES256"],
  });
  assert.equal(protectedHeader.alg, "ES256");
  assert.equal(payload.sub, SUBJECT.userId);
});

Deno.test("the key set publishes only public members, each with kid, alg and use", async () => {
  const ec = await privateJwk("ES256");
  const tokens = await tokensFor({
    JWT_SIGNING_KEY: JSON.stringify(await privateJwk("EdDSA")),
    JWT_VERIFY_KEYS: JSON.stringify([{ ...publicOf(ec), kid: "old-2026", ext: true }]),
  });
  const [signing, verify] = keySet(tokens).keys;
  assert.deepEqual(Object.keys(signing!).sort(), ["alg", "crv", "kid", "kty", "use", "x"]);
  assert.deepEqual(Object.keys(verify!).sort(), ["alg", "crv", "kid", "kty", "use", "x", "y"]);
  assert.equal(signing!.use, "sig");
  assert.equal(verify!.kid, "old-2026");
  assert.equal(tokens.jwksJson.includes('"d"'), false);
});

Deno.test("a key without kid gets its RFC 7638 thumbprint as kid", async () => {
  const tokens = await tokensFor({ JWT_SIGNING_KEY: JSON.stringify(RFC8037_KEY) });
  assert.equal(keySet(tokens).keys[0]!.kid, RFC8037_THUMBPRINT);
  const { token } = await tokens.issue(SUBJECT);
  assert.equal(decodeProtectedHeader(token).kid, RFC8037_THUMBPRINT);
});

Deno.test("a key with a kid keeps it", async () => {
  const tokens = await tokensFor({
    JWT_SIGNING_KEY: JSON.stringify({ ...RFC8037_KEY, kid: "2026-12" }),
  });
  assert.equal(keySet(tokens).keys[0]!.kid, "2026-12");
});

Deno.test("a private key among the verify keys stops the start, naming JWT_VERIFY_KEYS", async () => {
  const signing = JSON.stringify(await privateJwk("EdDSA"));
  const leaked = JSON.stringify([await privateJwk("EdDSA")]);
  assertConfigError(
    () => readJwtConfig(reader({ JWT_SIGNING_KEY: signing, JWT_VERIFY_KEYS: leaked })),
    "JWT_VERIFY_KEYS",
    /key 0 contains private key material/,
  );
});

Deno.test("a missing signing key stops the start, naming JWT_SIGNING_KEY", () => {
  assertConfigError(() => readJwtConfig(reader({})), "JWT_SIGNING_KEY", /required/);
});

Deno.test("symmetric, RSA and public-only signing keys are refused", async () => {
  const cases: [JWK, RegExp][] = [
    [{ kty: "oct", k: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0" }, /symmetric/],
    [{ kty: "RSA", n: "AQAB", e: "AQAB", d: "AQAB" }, /Ed25519 \(kty OKP\) or P-256/],
    [{ kty: "EC", crv: "P-384", x: "AA", y: "AA", d: "AA" }, /crv "P-384"/],
    [publicOf(await privateJwk("EdDSA")), /must be a private key/],
    [{ ...RFC8037_KEY, alg: "ES256" }, /expected EdDSA/],
    [{ ...RFC8037_KEY, use: "enc" }, /expected "sig"/],
  ];
  for (const [jwk, pattern] of cases) {
    assertConfigError(
      () => readJwtConfig(reader({ JWT_SIGNING_KEY: JSON.stringify(jwk) })),
      "JWT_SIGNING_KEY",
      pattern,
    );
  }
});

Deno.test("a symmetric verify key is refused", async () => {
  const signing = JSON.stringify(await privateJwk("EdDSA"));
  assertConfigError(
    () =>
      readJwtConfig(reader({
        JWT_SIGNING_KEY: signing,
        JWT_VERIFY_KEYS: JSON.stringify([{ kty: "oct", k: "c2VjcmV0" }]),
      })),
    "JWT_VERIFY_KEYS",
    /key 0 is a symmetric key/,
  );
});

Deno.test("malformed JSON is refused without echoing the secret", () => {
  const secret = '{"kty":"OKP","d":"very-secret-value"';
  assertConfigError(
    () => readJwtConfig(reader({ JWT_SIGNING_KEY: secret })),
    "JWT_SIGNING_KEY",
    /^config: JWT_SIGNING_KEY is not valid JSON$/,
  );
  assertConfigError(
    () =>
      readJwtConfig(
        reader({ JWT_SIGNING_KEY: JSON.stringify(RFC8037_KEY), JWT_VERIFY_KEYS: "{}" }),
      ),
    "JWT_VERIFY_KEYS",
    /JSON array of JWKs/,
  );
});

Deno.test("a private key whose public part belongs to another key stops the start", async () => {
  const other = await privateJwk("EdDSA");
  await assertConfigErrorAsync(
    () => tokensFor({ JWT_SIGNING_KEY: JSON.stringify({ ...RFC8037_KEY, x: other.x }) }),
    "JWT_SIGNING_KEY",
    /does not match/,
  );
});

Deno.test("a key with bad coordinates stops the start", async () => {
  await assertConfigErrorAsync(
    () => tokensFor({ JWT_SIGNING_KEY: JSON.stringify({ ...RFC8037_KEY, x: "AAAA" }) }),
    "JWT_SIGNING_KEY",
    /not a valid EdDSA/,
  );
});

Deno.test("two published keys with one kid stop the start", async () => {
  const extra = { ...publicOf(await privateJwk("EdDSA")), kid: "same" };
  await assertConfigErrorAsync(
    () =>
      tokensFor({
        JWT_SIGNING_KEY: JSON.stringify({ ...RFC8037_KEY, kid: "same" }),
        JWT_VERIFY_KEYS: JSON.stringify([extra]),
      }),
    "JWT_VERIFY_KEYS",
    /repeats the key id/,
  );
});

Deno.test("the dev signing key is an Ed25519 private JWK the config accepts", async () => {
  const raw = await generateDevSigningKey();
  const jwk = JSON.parse(raw);
  assert.equal(jwk.kty, "OKP");
  assert.equal(jwk.crv, "Ed25519");
  const tokens = await tokensFor({ JWT_SIGNING_KEY: raw });
  const { token } = await tokens.issue(SUBJECT);
  await jwtVerify(token, createLocalJWKSet(keySet(tokens)));
  assert.notEqual(await generateDevSigningKey(), raw);
});

function decodeBase64Url(s: string): Uint8Array {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64 + "=".repeat((4 - b64.length % 4) % 4)), (c) => c.charCodeAt(0));
}

function encodeBase64Url(data: string | Uint8Array): string {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(
    /=+$/,
    "",
  );
}
