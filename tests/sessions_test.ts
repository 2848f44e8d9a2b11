// Session management through real processes: refresh rotates and reuse after the grace
// revokes the session; list shows the caller's sessions only, with where they were
// opened; revoke ends one; introspection of a dead session is unauthenticated; many
// sessions called at once (their lookups share statements) each get their own answer.
import assert from "node:assert/strict";
import { authClient, bearer, logIn, signUp } from "../testing/accounts.ts";
import { outcomeOf } from "../testing/rpc.ts";
import { startStack } from "../testing/stack.ts";

const stack = await startStack({
  authEnv: { OTP_SEND_COOLDOWN_SECONDS: "0" },
  otpEnv: { OTP_SEND_COOLDOWN_SECONDS: "0" },
});
Deno.test.afterAll?.(() => stack.stop());

/** Lets the grace pass for every replaced token, as the clock would. */
async function pastTheGrace(): Promise<void> {
  await stack.sql`update auth.session_tokens
    set replaced_at = replaced_at - interval '1 minute' where replaced_at is not null`;
}

Deno.test("refresh rotates the session token; a replaced one presented after the grace revokes the session", async () => {
  const client = authClient(stack);
  const first = await signUp(stack, client);
  const { sessionId } = await client.getSession({}, bearer(first.sessionToken));
  const second = await client.refreshSession({}, bearer(first.sessionToken));
  assert.notEqual(second.sessionToken, first.sessionToken);
  assert.ok(second.accessToken);
  assert.equal((await client.getSession({}, bearer(second.sessionToken))).sessionId, sessionId);
  // Another tab refreshing with the token just replaced carries on, in the same session.
  const tab = await client.refreshSession({}, bearer(first.sessionToken));
  assert.equal((await client.getSession({}, bearer(tab.sessionToken))).sessionId, sessionId);

  await pastTheGrace();
  assert.equal(
    await outcomeOf(client.getSession({}, bearer(first.sessionToken))),
    "Unauthenticated",
  );
  assert.equal(await outcomeOf(client.getSession({}, bearer(second.sessionToken))), "ok");
  assert.equal(
    await outcomeOf(client.refreshSession({}, bearer(first.sessionToken))),
    "Unauthenticated",
  );
  for (const t of [second.sessionToken, tab.sessionToken]) {
    assert.equal(await outcomeOf(client.getSession({}, bearer(t))), "Unauthenticated");
  }
  const [audit] = await stack.sql<{ n: number }[]>`select count(*)::int as n
    from auth.audit_events where event = 'session_revoked' and outcome = 'token_reuse'`;
  assert.equal(audit!.n, 1);
});

Deno.test("sessions list the caller's own, with address and user agent; revoke ends one, no other user's", async () => {
  const laptop = authClient(stack, { userAgent: "Laptop/1.0" });
  const phoneApp = authClient(stack, { userAgent: "PhoneApp/2.0" });
  const me = await signUp(stack, laptop);
  const other = await logIn(stack, phoneApp, me.phone);
  const stranger = await signUp(stack, authClient(stack));

  const { sessions } = await laptop.listSessions({}, bearer(me.sessionToken));
  assert.equal(sessions.length, 2);
  assert.deepEqual(sessions.map((s) => s.userAgent).sort(), ["Laptop/1.0", "PhoneApp/2.0"]);
  assert.ok(sessions.every((s) => s.clientAddress === "127.0.0.1"));
  const current = sessions.find((s) => s.current)!;
  assert.equal(current.userAgent, "Laptop/1.0");
  const mine = await laptop.getSession({}, bearer(me.sessionToken));
  assert.equal(current.sessionId, mine.sessionId);
  assert.equal(mine.phoneNumber, me.phone);
  for (const f of [mine.createdAt, mine.expiresAt, mine.lastSeenAt]) assert.ok(Date.parse(f));

  const theirs = await laptop.getSession({}, bearer(stranger.sessionToken));
  assert.equal(
    (await laptop.revokeSession({ sessionId: theirs.sessionId }, bearer(me.sessionToken))).revoked,
    0,
  );
  assert.equal(await outcomeOf(laptop.getSession({}, bearer(stranger.sessionToken))), "ok");

  const phoneSession = sessions.find((s) => !s.current)!.sessionId;
  assert.equal(
    (await laptop.revokeSession({ sessionId: phoneSession }, bearer(me.sessionToken))).revoked,
    1,
  );
  assert.equal(
    await outcomeOf(phoneApp.getSession({}, bearer(other.sessionToken))),
    "Unauthenticated",
  );
  assert.equal(
    await outcomeOf(phoneApp.listSessions({}, bearer(other.sessionToken))),
    "Unauthenticated",
  );
  const left = await laptop.listSessions({}, bearer(me.sessionToken));
  assert.deepEqual(left.sessions.map((s) => s.sessionId), [mine.sessionId]);
});

Deno.test("a session that sat idle cannot act, not even to log out the others", async () => {
  const client = authClient(stack);
  const idle = await signUp(stack, client);
  const active = await logIn(stack, client, idle.phone);
  const { sessionId } = await client.getSession({}, bearer(idle.sessionToken));
  await stack.sql`update auth.sessions set last_seen_at = now() - interval '2 days'
    where id = ${sessionId}`;
  assert.equal(
    await outcomeOf(client.logout({ all: true }, bearer(idle.sessionToken))),
    "Unauthenticated",
  );
  assert.equal(
    await outcomeOf(client.getSession({}, bearer(idle.sessionToken))),
    "Unauthenticated",
  );
  assert.equal(await outcomeOf(client.getSession({}, bearer(active.sessionToken))), "ok");
  assert.equal((await client.logout({ all: true }, bearer(active.sessionToken))).revoked, 2);
});

Deno.test("concurrent calls of many sessions each act as their own session; a logged-out one is refused among them", async () => {
  const client = authClient(stack);
  const users: Awaited<ReturnType<typeof signUp>>[] = [];
  for (let i = 0; i < 4; i++) users.push(await signUp(stack, client));
  const ids = await Promise.all(
    users.map(async (u) => (await client.getSession({}, bearer(u.sessionToken))).sessionId),
  );
  const gone = await logIn(stack, client, users[0]!.phone);
  assert.equal((await client.logout({}, bearer(gone.sessionToken))).revoked, 1);
  const unknown = "A".repeat(43);
  const asked = Array.from({ length: 240 }, (_, i) => i % 6);
  const token = (k: number) =>
    k < 4 ? users[k]!.sessionToken : k === 4 ? gone.sessionToken : unknown;
  const answers = await Promise.all(asked.map(async (k) => {
    try {
      const s = await client.getSession({}, bearer(token(k)));
      const p = await client.getProfile({ phoneNumber: s.phoneNumber }, bearer(token(k)));
      return `${s.sessionId} ${s.phoneNumber} ${p.phoneNumber}`;
    } catch (e) {
      return (e as Error).message;
    }
  }));
  assert.deepEqual(
    answers,
    asked.map((k) =>
      k < 4
        ? `${ids[k]} ${users[k]!.phone} ${users[k]!.phone}`
        : "[unauthenticated] session is missing, expired or revoked"
    ),
  );
});
