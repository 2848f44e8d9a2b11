// Using sessions (GetProfile, Logout) through the Connect router
// in-process, on the in-memory store.
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { bearer, OTHER, PHONE, refused, setup } from "./domain_fixture.ts";

Deno.test("a session reads its own profile only, and needs a well-formed bearer token", async () => {
  const { client, verifiedUser } = await setup();
  const token = await verifiedUser();
  await verifiedUser(OTHER);
  const p = await client.getProfile({ phoneNumber: "+1 415 555 0123" }, bearer(token));
  assert.equal(p.phoneNumber, PHONE);
  await refused(
    client.getProfile({ phoneNumber: OTHER }, bearer(token)),
    Code.PermissionDenied,
    "NOT_OWN_PROFILE",
  );
  await refused(client.getProfile({ phoneNumber: PHONE }), Code.Unauthenticated, "SESSION_INVALID");
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer(token.slice(1))),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer("A".repeat(43))),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
});

Deno.test("a session left idle past the idle timeout is gone; one in use lives on", async () => {
  const { client, verifiedUser, elapse } = await setup();
  const token = await verifiedUser();
  elapse(500);
  await client.getProfile({ phoneNumber: PHONE }, bearer(token));
  elapse(500);
  await client.getProfile({ phoneNumber: PHONE }, bearer(token));
  elapse(601);
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer(token)),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
});

Deno.test("logout revokes this session, or with all every session of the user", async () => {
  const { client, issue, verifiedUser } = await setup();
  const first = await verifiedUser();
  const sessions = [];
  for (const code of ["111111", "222222"]) {
    await issue(PHONE, "login", code, { ageSeconds: -sessions.length - 1 });
    sessions.push(
      (await client.loginWithPhoneNumber({ phoneNumber: PHONE, otp: code })).sessionToken,
    );
  }
  assert.equal((await client.logout({}, bearer(first))).revoked, 1);
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer(first)),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
  await refused(client.logout({}, bearer(first)), Code.Unauthenticated, "SESSION_INVALID");
  await client.getProfile({ phoneNumber: PHONE }, bearer(sessions[1]!));
  assert.equal((await client.logout({ all: true }, bearer(sessions[0]!))).revoked, 2);
  await refused(
    client.getProfile({ phoneNumber: PHONE }, bearer(sessions[1]!)),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
});
