// RequestPhoneChange / ConfirmPhoneChange and DeleteAccount through the Connect router
// in-process, on the in-memory store.
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { bearer, OTHER, PHONE, refused, setup } from "./domain_fixture.ts";

const NEW = "+14155550177";

Deno.test("a phone change sends a phone_change code to the new number and moves the user", async () => {
  const { client, asked, issue, verifiedUser, loginSession, store } = await setup();
  const token = await verifiedUser();
  const other = await loginSession();
  const r = await client.requestPhoneChange({ newPhoneNumber: "+1 415 555 0177" }, bearer(token));
  assert.equal(r.message, "A code was sent to the new number");
  assert.deepEqual(asked.at(-1), { phone: NEW, purpose: "phone_change" });
  await issue(NEW, "phone_change", "111111");
  // A phone_change code logs no one in.
  await refused(
    client.loginWithPhoneNumber({ phoneNumber: NEW, otp: "111111" }),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  const c = await client.confirmPhoneChange({ newPhoneNumber: NEW, otp: "111111" }, bearer(token));
  assert.equal(c.phoneNumber, NEW);
  // Other sessions stay, now on the new number.
  assert.equal((await client.getSession({}, bearer(other))).phoneNumber, NEW);
  assert.equal((await client.validatePhoneNumberLogin({ phoneNumber: PHONE })).isValid, false);
  assert.equal((await client.validatePhoneNumberLogin({ phoneNumber: NEW })).isValid, true);
  assert.ok(store.auditTrail.some((e) => e.event === "phone_changed" && e.phone === PHONE));
  assert.equal(store.events.at(-1)?.routingKey, "phone.changed");
  // The code was single use.
  await refused(
    client.confirmPhoneChange({ newPhoneNumber: NEW, otp: "111111" }, bearer(token)),
    Code.InvalidArgument,
    "INVALID_ARGUMENT",
  );
});

Deno.test("a number held by another account is told only after its code proves possession", async () => {
  const { client, asked, issue, verifiedUser } = await setup();
  const token = await verifiedUser();
  await verifiedUser(OTHER);
  // The request answers as for any number.
  await client.requestPhoneChange({ newPhoneNumber: OTHER }, bearer(token));
  assert.deepEqual(asked.at(-1), { phone: OTHER, purpose: "phone_change" });
  await refused(
    client.confirmPhoneChange({ newPhoneNumber: OTHER, otp: "000000" }, bearer(token)),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  await issue(OTHER, "phone_change", "222222");
  await refused(
    client.confirmPhoneChange({ newPhoneNumber: OTHER, otp: "222222" }, bearer(token)),
    Code.AlreadyExists,
    "PHONE_TAKEN",
  );
  assert.equal((await client.getSession({}, bearer(token))).phoneNumber, PHONE);
});

Deno.test("phone change needs a live session, a different number and a well-formed code", async () => {
  const { client, verifiedUser } = await setup();
  const token = await verifiedUser();
  await refused(
    client.requestPhoneChange({ newPhoneNumber: NEW }),
    Code.Unauthenticated,
    "SESSION_INVALID",
  );
  await refused(
    client.requestPhoneChange({ newPhoneNumber: PHONE }, bearer(token)),
    Code.InvalidArgument,
    "INVALID_ARGUMENT",
  );
  await refused(
    client.requestPhoneChange({ newPhoneNumber: "12" }, bearer(token)),
    Code.InvalidArgument,
    "PHONE_INVALID",
  );
  await refused(
    client.requestPhoneChange({ newPhoneNumber: "+33612345678" }, bearer(token)),
    Code.PermissionDenied,
    "COUNTRY_NOT_ALLOWED",
  );
  await refused(
    client.confirmPhoneChange({ newPhoneNumber: NEW, otp: "12" }, bearer(token)),
    Code.InvalidArgument,
    "CODE_MALFORMED",
  );
});

Deno.test("phone change codes are charged like any code: the cooldown applies", async () => {
  const { client, verifiedUser } = await setup();
  const token = await verifiedUser();
  await client.requestPhoneChange({ newPhoneNumber: NEW }, bearer(token));
  await refused(
    client.requestPhoneChange({ newPhoneNumber: NEW }, bearer(token)),
    Code.ResourceExhausted,
    "RATE_LIMITED",
  );
});

Deno.test("wrong phone change codes use up the code's tries", async () => {
  const { client, issue, verifiedUser } = await setup();
  const token = await verifiedUser();
  await issue(NEW, "phone_change", "333333");
  for (let i = 0; i < 3; i++) {
    await refused(
      client.confirmPhoneChange({ newPhoneNumber: NEW, otp: "444444" }, bearer(token)),
      Code.Unauthenticated,
      "CODE_INVALID",
    );
  }
  await refused(
    client.confirmPhoneChange({ newPhoneNumber: NEW, otp: "333333" }, bearer(token)),
    Code.ResourceExhausted,
    "CODE_EXHAUSTED",
  );
});

Deno.test("deleting the account needs a fresh login code; afterwards its tokens are dead and the number is free", async () => {
  const { client, issue, verifiedUser, loginSession, store, elapse } = await setup();
  const token = await verifiedUser();
  const other = await loginSession();
  const { userId } = await client.getSession({}, bearer(token));
  await refused(
    client.deleteAccount({ otp: "555555" }, bearer(token)),
    Code.Unauthenticated,
    "CODE_INVALID",
  );
  assert.equal((await client.validatePhoneNumberLogin({ phoneNumber: PHONE })).isValid, true);
  await issue(PHONE, "login", "555555", { ageSeconds: -2 });
  await refused(client.deleteAccount({ otp: "555555" }), Code.Unauthenticated, "SESSION_INVALID");
  assert.equal((await client.deleteAccount({ otp: "555555" }, bearer(token))).deleted, true);
  for (const t of [token, other]) {
    await refused(client.getSession({}, bearer(t)), Code.Unauthenticated, "SESSION_INVALID");
    await refused(client.refreshSession({}, bearer(t)), Code.Unauthenticated, "SESSION_INVALID");
  }
  assert.equal((await client.validatePhoneNumberLogin({ phoneNumber: PHONE })).isValid, false);
  assert.ok(store.auditTrail.some((e) => e.event === "user_deleted"), "the audit trail stays");
  const deleted = store.events.filter((m) => m.routingKey === "user.deleted");
  assert.equal(deleted.length, 1);
  elapse(61);
  const fresh = await verifiedUser();
  assert.notEqual((await client.getSession({}, bearer(fresh))).userId, userId);
});

Deno.test("a code asked for right after one was used names it, so otp-service sends a new one", async () => {
  const { client, issue, verifiedUser, spent, elapse } = await setup();
  await verifiedUser();
  await client.validatePhoneNumberLogin({ phoneNumber: PHONE });
  assert.equal(spent.at(-1), undefined);
  const requestId = crypto.randomUUID();
  await issue(PHONE, "login", "777777", { ageSeconds: -1, requestId });
  elapse(61);
  await client.validatePhoneNumberLogin({ phoneNumber: PHONE });
  assert.equal(spent.at(-1), undefined, "the code is still unused");
  await client.loginWithPhoneNumber({ phoneNumber: PHONE, otp: "777777" });
  elapse(61);
  await client.validatePhoneNumberLogin({ phoneNumber: PHONE });
  assert.equal(spent.at(-1), requestId);
});
