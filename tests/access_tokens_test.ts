// Access tokens through real processes: another service verifies them with jose against
// the key set auth-service publishes, with no call to auth-service; the claims name the
// user and session; expired, tampered and foreign tokens fail; a key rotation keeps
// tokens of both keys verifying.
import assert from "node:assert/strict";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  SignJWT,
} from "jose";
import type { JSONWebKeySet } from "jose";
import { authClient, bearer, signUp } from "../testing/accounts.ts";
import { startStack } from "../testing/stack.ts";

const AUDIENCE = "orders-api";
const stack = await startStack({ authEnv: { JWT_AUDIENCE: AUDIENCE } });
Deno.test.afterAll?.(() => stack.stop());

const jwksUrl = () => new URL("/.well-known/jwks.json", stack.authUrl);
const keySet = async () => await (await fetch(jwksUrl())).json() as JSONWebKeySet;
const verifyOptions = { issuer: "phone-auth", audience: AUDIENCE };

Deno.test("the key set is public keys only, each with a kid, and never cached", async () => {
  const res = await fetch(jwksUrl());
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const { keys } = await res.json() as JSONWebKeySet;
  assert.equal(keys.length, 1);
  const [k] = keys;
  assert.equal(k?.kty, "OKP");
  assert.equal(k?.alg, "EdDSA");
  assert.ok(k?.kid);
  assert.equal("d" in k!, false, "no private member");
  const post = await fetch(jwksUrl(), { method: "POST" });
  await post.body?.cancel();
  assert.equal(post.status, 405);
});

Deno.test("an access token verifies against the published key set and carries the session's claims", async () => {
  const client = authClient(stack);
  const { phone, accessToken, expiresIn, sessionToken } = await signUp(stack, client);
  assert.equal(expiresIn, 600);
  const { payload, protectedHeader } = await jwtVerify(
    accessToken,
    createRemoteJWKSet(jwksUrl()),
    verifyOptions,
  );
  const session = await client.getSession({}, bearer(sessionToken));
  assert.equal(protectedHeader.alg, "EdDSA");
  assert.equal(protectedHeader.kid, (await keySet()).keys[0]?.kid);
  assert.equal(payload.sub, session.userId);
  assert.equal(payload.sid, session.sessionId);
  assert.equal(payload.phone_number, phone);
  assert.equal(payload.aud, AUDIENCE);
  assert.equal(payload.exp! - payload.iat!, 600);
  // Another audience's verifier refuses it.
  await assert.rejects(
    jwtVerify(accessToken, createRemoteJWKSet(jwksUrl()), { ...verifyOptions, audience: "x" }),
    { code: "ERR_JWT_CLAIM_VALIDATION_FAILED" },
  );
});

Deno.test("an access token stops verifying once it expires", async () => {
  const { accessToken } = await signUp(stack, authClient(stack));
  const jwks = createLocalJWKSet(await keySet());
  const { payload } = await jwtVerify(accessToken, jwks, verifyOptions);
  await assert.rejects(
    jwtVerify(accessToken, jwks, {
      ...verifyOptions,
      currentDate: new Date((payload.exp! + 1) * 1000),
    }),
    { code: "ERR_JWT_EXPIRED" },
  );
});

Deno.test("a tampered token and one signed by an unknown key fail", async () => {
  const { accessToken } = await signUp(stack, authClient(stack));
  const jwks = createLocalJWKSet(await keySet());
  const [h, p, s] = accessToken.split(".");
  const claims = JSON.parse(atob(p!.replace(/-/g, "+").replace(/_/g, "/")));
  const forged = btoa(JSON.stringify({ ...claims, sub: crypto.randomUUID() }))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  await assert.rejects(jwtVerify(`${h}.${forged}.${s}`, jwks, verifyOptions), {
    code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
  });
  const { privateKey } = await generateKeyPair("EdDSA");
  const kid = decodeProtectedHeader(accessToken).kid!;
  const foreign = await new SignJWT(claims)
    .setProtectedHeader({ alg: "EdDSA", kid })
    .sign(privateKey);
  await assert.rejects(jwtVerify(foreign, jwks, verifyOptions), {
    code: "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
  });
  const unknownKid = await new SignJWT(claims)
    .setProtectedHeader({ alg: "EdDSA", kid: "someone-else" })
    .sign(privateKey);
  await assert.rejects(jwtVerify(unknownKid, jwks, verifyOptions), {
    code: "ERR_JWKS_NO_MATCHING_KEY",
  });
});

Deno.test("after a rotation with the old key in JWT_VERIFY_KEYS, tokens of both keys verify", async () => {
  const client = authClient(stack);
  const before = await signUp(stack, client);
  const [oldKey] = (await keySet()).keys;
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  stack.env.auth.JWT_SIGNING_KEY = JSON.stringify(await exportJWK(privateKey));
  stack.env.auth.JWT_VERIFY_KEYS = JSON.stringify([oldKey]);
  await stack.auth.stop();
  await stack.startAuth();
  const after = await signUp(stack, authClient(stack));
  const published = await keySet();
  assert.deepEqual(published.keys.map((k) => k.alg), ["ES256", "EdDSA"]);
  const jwks = createLocalJWKSet(published);
  const a = await jwtVerify(before.accessToken, jwks, verifyOptions);
  const b = await jwtVerify(after.accessToken, jwks, verifyOptions);
  assert.equal(a.protectedHeader.kid, oldKey?.kid);
  assert.equal(b.protectedHeader.alg, "ES256");
  assert.notEqual(b.protectedHeader.kid, oldKey?.kid);
  // Sessions outlive the signing key: the old session refreshes into a new-key token.
  const refreshed = await authClient(stack).refreshSession({}, bearer(before.sessionToken));
  assert.equal(
    (await jwtVerify(refreshed.accessToken, jwks, verifyOptions)).protectedHeader.alg,
    "ES256",
  );
});
