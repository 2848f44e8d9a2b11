// The try-it page: plain DOM and the generated client, no framework. Three views (start,
// code, account) in index.html; this file moves between them and calls auth-service.
// Text from the server is only ever set with textContent: a session's user agent is
// whatever another client sent, and must never become markup.
import type { Session } from "../../../shared/gen/auth/v1/auth_pb.ts";
import { Code } from "@connectrpc/connect";
import { authClient, bearer, describeError, hasCode, sessionStore } from "./api.ts";
import type { StoredSession } from "./api.ts";

const auth = authClient();

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from index.html`);
  return el as T;
}

const status = $("status");
const error = $("error");

function say(text: string): void {
  error.hidden = true;
  error.textContent = "";
  status.textContent = text;
}

function fail(err: unknown): void {
  status.textContent = "";
  error.textContent = typeof err === "string" ? err : describeError(err);
  error.hidden = false;
}

type View = "start" | "code" | "account";

function show(view: View, focus: HTMLElement = $(`${view}-title`)): void {
  for (const v of ["start", "code", "account"]) $(`${v}-view`).hidden = v !== view;
  focus.focus();
}

/** Runs one action with its buttons disabled, so a double click sends one request. */
async function busy(
  scope: HTMLElement,
  work: () => Promise<void>,
  onError: (err: unknown) => void | Promise<void> = fail,
): Promise<void> {
  const buttons = [...scope.querySelectorAll("button")];
  const focused = document.activeElement;
  for (const b of buttons) b.disabled = true;
  scope.setAttribute("aria-busy", "true");
  // An old error next to a new attempt would read as this attempt's outcome.
  error.hidden = true;
  try {
    await work();
  } catch (err) {
    await onError(err);
  } finally {
    for (const b of buttons) b.disabled = false;
    scope.removeAttribute("aria-busy");
    // Disabling the pressed button dropped focus to the page; a keyboard user gets it back.
    const lost = document.activeElement === document.body || document.activeElement === null;
    if (lost && focused instanceof HTMLElement && focused.isConnected) focused.focus();
  }
}

/** The trimmed value of a required field, or undefined after saying what is missing. */
function required(input: HTMLInputElement, what: string): string | undefined {
  const value = input.value.trim();
  input.setAttribute("aria-invalid", value ? "false" : "true");
  if (value) return value;
  fail(`Enter ${what}.`);
  input.focus();
  return undefined;
}

const when = (iso: string) => (iso ? new Date(iso).toLocaleString() : "—");

// ---- start and code views ----

let pending: { intent: "signup" | "login"; phoneNumber: string } | undefined;
const phoneInput = $<HTMLInputElement>("phone");
const otpInput = $<HTMLInputElement>("otp");

$<HTMLFormElement>("phone-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = e.currentTarget as HTMLFormElement;
  const intent = (e.submitter as HTMLButtonElement | null)?.value === "login" ? "login" : "signup";
  const phoneNumber = required(phoneInput, "a phone number");
  if (!phoneNumber) return;
  busy(form, async () => {
    if (intent === "signup") {
      say((await auth.signupWithPhoneNumber({ phoneNumber })).message);
    } else if ((await auth.validatePhoneNumberLogin({ phoneNumber })).isValid) {
      say("Login code sent.");
    } else {
      return fail("No verified account has this number. Sign up first.");
    }
    pending = { intent, phoneNumber };
    $("code-phone").textContent = phoneNumber;
    otpInput.value = "";
    show("code", otpInput);
  });
});

$<HTMLFormElement>("code-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const otp = required(otpInput, "the code");
  if (!otp || !pending) return;
  const { intent, phoneNumber } = pending;
  busy(e.currentTarget as HTMLFormElement, async () => {
    const reply = intent === "signup"
      ? await auth.verifyPhoneNumber({ phoneNumber, otp })
      : await auth.loginWithPhoneNumber({ phoneNumber, otp });
    pending = undefined;
    const s = { token: reply.sessionToken, phoneNumber, accessToken: reply.accessToken };
    sessionStore.save(s);
    await openAccount(s);
    say(intent === "signup" ? "Phone number verified. You are signed in." : "You are logged in.");
  });
});

$("code-back").addEventListener("click", () => {
  pending = undefined;
  say("");
  show("start", phoneInput);
});

// ---- account view ----

async function openAccount(s: StoredSession): Promise<void> {
  const profile = await auth.getProfile({ phoneNumber: s.phoneNumber }, bearer(s));
  // The server's E.164 form is the one later calls must send.
  if (profile.phoneNumber !== s.phoneNumber) {
    sessionStore.save({ ...s, phoneNumber: profile.phoneNumber });
  }
  $("profile-phone").textContent = profile.phoneNumber;
  $("profile-user").textContent = profile.userId;
  $("profile-verified").textContent = profile.verified ? `yes, ${when(profile.verifiedAt)}` : "no";
  $("profile-created").textContent = when(profile.createdAt);
  showAccessToken(s.accessToken ?? "");
  await loadSessions(current());
  resetForms();
  show("account");
}

function current(): StoredSession {
  const s = sessionStore.load();
  if (!s) throw new Error("no session");
  return s;
}

async function loadSessions(s: StoredSession): Promise<void> {
  const body = $<HTMLTableSectionElement>("sessions-body");
  try {
    const { sessions } = await auth.listSessions({}, bearer(s));
    body.replaceChildren(...sessions.map(sessionRow));
  } catch (err) {
    // An older auth-service without session listing still serves the rest of the page.
    if (!hasCode(err, Code.Unimplemented)) throw err;
    body.replaceChildren();
    const row = body.insertRow();
    const cell = row.insertCell();
    cell.colSpan = 6;
    cell.textContent = `Sessions cannot be listed: ${describeError(err)}`;
  }
}

function sessionRow(s: Session): HTMLTableRowElement {
  const row = document.createElement("tr");
  const cell = (text: string, tag: "td" | "th" = "td") => {
    const c = document.createElement(tag);
    c.textContent = text;
    row.append(c);
    return c;
  };
  const device = cell(s.userAgent ? shorten(s.userAgent) : "Unknown device", "th");
  device.scope = "row";
  device.title = s.userAgent;
  if (s.current) {
    row.className = "current";
    const mark = document.createElement("strong");
    mark.className = "badge";
    mark.textContent = "This device";
    device.prepend(mark, " ");
  }
  cell(when(s.createdAt));
  cell(when(s.lastSeenAt));
  cell(when(s.expiresAt));
  cell(s.clientAddress || "—");
  const action = cell("");
  if (!s.current) {
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "secondary";
    revoke.textContent = "Revoke";
    revoke.setAttribute("aria-label", `Revoke the session signed in ${when(s.createdAt)}`);
    revoke.addEventListener("click", () =>
      busy(action, async () => {
        await auth.revokeSession({ sessionId: s.sessionId }, bearer(current()));
        await loadSessions(current());
        say("Session revoked.");
        $("sessions-title").focus();
      }, accountError));
    action.append(revoke);
  }
  return row;
}

function shorten(ua: string): string {
  return ua.length > 60 ? `${ua.slice(0, 57)}…` : ua;
}

/** The claims of the access token; its expiry read from them, so a reload still tells it. */
function showAccessToken(token: string): void {
  const box = $<HTMLDetailsElement>("access");
  box.hidden = !token;
  if (!token) return;
  try {
    const payload = token.split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(payload));
    const exp = typeof claims.exp === "number" ? new Date(claims.exp * 1000) : undefined;
    const verb = exp && exp.getTime() < Date.now() ? "Expired" : "Valid until";
    $("access-expiry").textContent = exp ? `${verb} ${exp.toLocaleString()}` : "";
    $("access-claims").textContent = JSON.stringify(claims, null, 2);
  } catch {
    $("access-expiry").textContent = "Its expiry cannot be read";
    $("access-claims").textContent = token;
  }
}

/** A call from the account view failed: say so, and leave the view if the session is gone. */
async function accountError(err: unknown): Promise<void> {
  fail(err);
  // A wrong code is `unauthenticated` too; only a dead session ends the view.
  if (!hasCode(err, Code.Unauthenticated) || await sessionAlive()) return;
  signedOut();
  fail("Your session has ended (revoked, expired or idle). Log in again.");
}

async function sessionAlive(): Promise<boolean> {
  const s = sessionStore.load();
  if (!s) return false;
  try {
    await auth.getProfile({ phoneNumber: s.phoneNumber }, bearer(s));
    return true;
  } catch (err) {
    return !hasCode(err, Code.Unauthenticated);
  }
}

function signedOut(message = ""): void {
  sessionStore.clear();
  showAccessToken("");
  say(message);
  show("start", phoneInput);
}

function resetForms(): void {
  for (const id of ["change-form", "change-confirm-form", "delete-form"]) {
    $<HTMLFormElement>(id).reset();
  }
  $("change-form").hidden = false;
  $("change-confirm-form").hidden = true;
  $("delete-start").hidden = false;
  $("delete-form").hidden = true;
}

for (const [id, all] of [["logout", false], ["logout-all", true]] as const) {
  $(id).addEventListener("click", () =>
    busy($("account-view"), async () => {
      const { revoked } = await auth.logout({ all }, bearer(current()));
      signedOut(all ? `Logged out of ${revoked} session(s).` : "Logged out.");
    }, accountError));
}

$("refresh").addEventListener("click", () =>
  busy($("account-view"), async () => {
    const s = current();
    const reply = await auth.refreshSession({}, bearer(s));
    sessionStore.save({ ...s, token: reply.sessionToken, accessToken: reply.accessToken });
    showAccessToken(reply.accessToken);
    await loadSessions(current());
    say("Session token rotated; the old one stops working after a short grace.");
  }, accountError));

let newPhone = "";
const newPhoneInput = $<HTMLInputElement>("new-phone");
const changeOtp = $<HTMLInputElement>("change-otp");

$<HTMLFormElement>("change-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = required(newPhoneInput, "the new phone number");
  if (!value) return;
  busy(e.currentTarget as HTMLFormElement, async () => {
    const { message } = await auth.requestPhoneChange(
      { newPhoneNumber: value },
      bearer(current()),
    );
    newPhone = value;
    $("change-phone").textContent = value;
    $("change-form").hidden = true;
    $("change-confirm-form").hidden = false;
    changeOtp.value = "";
    changeOtp.focus();
    say(message || "Code sent to the new number.");
  }, accountError);
});

$<HTMLFormElement>("change-confirm-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const otp = required(changeOtp, "the code sent to the new number");
  if (!otp) return;
  busy(e.currentTarget as HTMLFormElement, async () => {
    const { phoneNumber } = await auth.confirmPhoneChange(
      { newPhoneNumber: newPhone, otp },
      bearer(current()),
    );
    sessionStore.save({ ...current(), phoneNumber });
    await openAccount(current());
    say(`Your phone number is now ${phoneNumber}.`);
  }, accountError);
});

$("change-cancel").addEventListener("click", () => {
  resetForms();
  newPhoneInput.focus();
});

const deleteOtp = $<HTMLInputElement>("delete-otp");

$("delete-send").addEventListener("click", () =>
  busy($("delete-start"), async () => {
    const { phoneNumber } = current();
    if (!(await auth.validatePhoneNumberLogin({ phoneNumber })).isValid) {
      return fail("This number has no verified account any more.");
    }
    $("delete-phone").textContent = phoneNumber;
    $("delete-start").hidden = true;
    $("delete-form").hidden = false;
    deleteOtp.value = "";
    deleteOtp.focus();
    say("Login code sent.");
  }, accountError));

$<HTMLFormElement>("delete-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const otp = required(deleteOtp, "the login code");
  if (!otp) return;
  busy(e.currentTarget as HTMLFormElement, async () => {
    await auth.deleteAccount({ otp }, bearer(current()));
    signedOut("Your account is deleted. The number can sign up again.");
  }, accountError);
});

$("delete-cancel").addEventListener("click", () => {
  resetForms();
  $("delete-send").focus();
});

// ---- start ----

const saved = sessionStore.load();
if (saved) {
  busy($("start-view"), () => openAccount(saved), (err) => {
    if (hasCode(err, Code.Unauthenticated)) {
      return signedOut("Your previous session has ended. Log in again.");
    }
    fail(err);
  });
} else {
  phoneInput.focus();
}
