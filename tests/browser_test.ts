// The try-it page as a newcomer uses it: `deno task dev` started as a real process, the
// page driven in headless Chromium, each code read from the dev terminal's 📱 SMS lines
// and typed in. On failure a screenshot of every open page is saved and its path
// printed; BROWSER_SCREENSHOTS=<dir> also keeps one per step.
import assert from "node:assert/strict";
import fs from "node:fs";
import type { Browser, Page } from "playwright-core";
import { parseConsoleSmsLine } from "../otp_service/sms/console_sender.ts";
import { processEnv, Service, taskArgs } from "../testing/processes.ts";
import { codeInConsoleLine } from "../testing/sms_codes.ts";
import { randomPhone, startStack } from "../testing/stack.ts";

// Node's fs.existsSync never throws. Deno's throws NotCapable for the /proc/sys paths it
// guards even under --allow-read, and playwright-core probes one of them when it loads
// (WSL detection). Give it Node's contract back before loading it.
const existsSync = fs.existsSync;
fs.existsSync = (path) => {
  try {
    return existsSync(path);
  } catch {
    return false;
  }
};
const { chromium } = await import("playwright-core");

const ROOT = new URL("../", import.meta.url);
const CHROMIUM = "/usr/bin/chromium";

Deno.test("the try-it page: the whole journey from sign-up to account deletion, refused calls shown with their Connect code and reason", async () => {
  await withPage(async ({ open, step, codeAfter, mark }) => {
    const phone = randomPhone();
    const laptop = await open();

    await step(laptop, "sign up and enter the code, with the keyboard only", async () => {
      assert.match(await laptop.locator("#dev-note").innerText(), /deno task dev.*📱 SMS/s);
      const at = mark();
      // The number field has the focus on load, and Enter means Sign up.
      await laptop.keyboard.type(phone);
      await laptop.keyboard.press("Enter");
      await until(laptop, "#code-view");
      assert.equal(await laptop.locator("#code-phone").innerText(), phone);
      // The focus has moved to the code field.
      await laptop.keyboard.type(await codeAfter(at, phone));
      await laptop.keyboard.press("Enter");
      await until(laptop, "#account-view");
      assert.match(await status(laptop), /verified/i);
      assert.equal(await laptop.locator("#profile-phone").innerText(), phone);
      assert.match(await laptop.locator("#profile-verified").innerText(), /^yes/);
    });

    await step(laptop, "a reload keeps the session of this tab", async () => {
      await laptop.reload();
      await until(laptop, "#account-view");
      assert.equal(await laptop.locator("#profile-phone").innerText(), phone);
    });

    const tablet = await open();
    await step(tablet, "refused calls show their Connect code, reason and message", async () => {
      await fillPhone(tablet, phone);
      await tablet.getByRole("button", { name: "Sign up" }).click();
      assert.match(await shownError(tablet), /^already_exists \(ALREADY_REGISTERED\): /);

      await fillPhone(tablet, randomPhone());
      await tablet.getByRole("button", { name: "Log in" }).click();
      assert.match(await shownError(tablet), /No verified account/);

      await fillPhone(tablet, "+1 555");
      await tablet.getByRole("button", { name: "Log in" }).click();
      assert.match(await shownError(tablet), /^invalid_argument \(PHONE_INVALID\): /);

      const at = mark();
      await fillPhone(tablet, phone);
      await tablet.getByRole("button", { name: "Log in" }).click();
      await until(tablet, "#code-view");
      const code = await codeAfter(at, phone);
      await enterCode(tablet, "#otp", code === "000000" ? "111111" : "000000", "Continue");
      assert.match(await shownError(tablet), /^unauthenticated \(CODE_INVALID\): /);
      await enterCode(tablet, "#otp", code, "Continue");
      await until(tablet, "#account-view");
      assert.equal(await tablet.locator("#error").isVisible(), false, "the error is cleared");
    });

    await step(laptop, "log out", async () => {
      await laptop.getByRole("button", { name: "Log out", exact: true }).click();
      await until(laptop, "#start-view");
      assert.equal(await status(laptop), "Logged out.");
      await laptop.reload();
      await until(laptop, "#start-view");
      assert.equal(await laptop.locator("#account-view").isVisible(), false);
    });

    await step(laptop, "log in again", async () => {
      const at = mark();
      await fillPhone(laptop, phone);
      await laptop.getByRole("button", { name: "Log in" }).click();
      await until(laptop, "#code-view");
      await enterCode(laptop, "#otp", await codeAfter(at, phone), "Continue");
      await until(laptop, "#account-view");
      assert.equal(await status(laptop), "You are logged in.");
      assert.equal(await laptop.locator("#profile-phone").innerText(), phone);
    });

    await step(
      laptop,
      "the sessions show this device and the other; revoking it signs it out",
      async () => {
        await rows(laptop, 2);
        assert.match(await laptop.locator("#sessions-body tr.current").innerText(), /This device/);
        const other = laptop.locator("#sessions-body tr:not(.current)");
        await other.getByRole("button", { name: /^Revoke/ }).click();
        await laptop.getByText("Session revoked.").waitFor();
        await rows(laptop, 1);
        await tablet.reload();
        await until(tablet, "#start-view");
        assert.match(
          await status(tablet),
          /session has ended/i,
          "the revoked device is signed out",
        );
      },
    );

    await step(
      laptop,
      "refresh the session: new access token claims, the rotated token works",
      async () => {
        await laptop.getByRole("button", { name: "Refresh session" }).click();
        await laptop.getByText(/rotated/).waitFor();
        await laptop.getByText("Access token (JWT)").click();
        const shown = await laptop.locator("#access-claims").innerText();
        const claims = JSON.parse(shown);
        assert.equal(claims.phone_number, phone);
        assert.equal(typeof claims.sid, "string");
        assert.ok(claims.exp > Date.now() / 1000, "the access token has not expired");
        assert.match(await laptop.locator("#access-expiry").innerText(), /^Valid until /);
        // The page now holds only the rotated token: a reload signs in with it, and the
        // access token it was given is still shown.
        await laptop.reload();
        await until(laptop, "#account-view");
        assert.equal(await laptop.locator("#profile-phone").innerText(), phone);
        await rows(laptop, 1);
        await laptop.getByText("Access token (JWT)").click();
        assert.equal(await laptop.locator("#access-claims").innerText(), shown);
      },
    );

    const newPhone = randomPhone();
    await step(laptop, "change the number with a code sent to the new one", async () => {
      const at = mark();
      await laptop.getByLabel("New phone number").fill(newPhone);
      await laptop.getByRole("button", { name: "Send code to the new number" }).click();
      await laptop.locator("#change-otp:visible").waitFor();
      await enterCode(laptop, "#change-otp", await codeAfter(at, newPhone), "Change number");
      await laptop.getByText(`Your phone number is now ${newPhone}.`).waitFor();
      assert.equal(await laptop.locator("#profile-phone").innerText(), newPhone);
    });

    await step(laptop, "log out and log in with the new number", async () => {
      await laptop.getByRole("button", { name: "Log out", exact: true }).click();
      await until(laptop, "#start-view");
      const at = mark();
      await fillPhone(laptop, newPhone);
      await laptop.getByRole("button", { name: "Log in" }).click();
      await until(laptop, "#code-view");
      await enterCode(laptop, "#otp", await codeAfter(at, newPhone), "Continue");
      await until(laptop, "#account-view");
      assert.equal(await laptop.locator("#profile-phone").innerText(), newPhone);
    });

    await step(
      laptop,
      "delete the account with a fresh login code; the number can sign up again",
      async () => {
        const at = mark();
        await laptop.getByRole("button", { name: "Send a code to delete my account" }).click();
        await laptop.locator("#delete-otp:visible").waitFor();
        await enterCode(laptop, "#delete-otp", await codeAfter(at, newPhone), /Delete my account/);
        await until(laptop, "#start-view");
        assert.match(await status(laptop), /account is deleted/);
        // The number is free again: signing up sends a code instead of `already_exists`.
        const again = mark();
        await fillPhone(laptop, newPhone);
        await laptop.getByRole("button", { name: "Sign up" }).click();
        await until(laptop, "#code-view");
        await codeAfter(again, newPhone);
      },
    );
  });
});

Deno.test("auth-service on its own serves no page: only the dev launcher adds it", async () => {
  const stack = await startStack();
  try {
    for (const path of ["/", "/app.js", "/style.css"]) {
      const res = await fetch(`${stack.authUrl}${path}`);
      await res.body?.cancel();
      assert.equal(res.status, 404, path);
    }
  } finally {
    await stack.stop();
  }
});

interface Journey {
  /** A new browser context: a separate device with its own sessionStorage. */
  open(): Promise<Page>;
  /** Runs one named step; a failure names it, and BROWSER_SCREENSHOTS keeps its end. */
  step(page: Page, name: string, body: () => Promise<void>): Promise<void>;
  /** Where the dev output is now, so a later code is looked for after it. */
  mark(): number;
  codeAfter(mark: number, phone: string): Promise<string>;
}

async function withPage(body: (j: Journey) => Promise<void>): Promise<void> {
  const dataDir = `.dev/test-${crypto.randomUUID()}`;
  const dev = new Service("dev", await taskArgs("dev"), devEnv(dataDir));
  let browser: Browser | undefined;
  let current = "start deno task dev and Chromium";
  let shot = 0;
  const pages: Page[] = [];
  const pageErrors: string[] = [];
  try {
    // The banner names the page; the newcomer opens exactly that URL.
    const banner = await dev.waitForLine((l) => l.includes("try it        http://"), 60_000);
    const pageUrl = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(banner)![1]!;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    const b = browser;
    await body({
      async open() {
        const page = await (await b.newContext()).newPage();
        page.setDefaultTimeout(15_000);
        page.on("pageerror", (e) => pageErrors.push(e.message));
        pages.push(page);
        const res = await page.goto(pageUrl);
        assert.match(res?.headers()["content-security-policy"] ?? "", /script-src 'self'/);
        return page;
      },
      async step(page, name, run) {
        current = name;
        await run();
        assert.deepEqual(pageErrors, [], "the page threw no exception");
        const dir = Deno.env.get("BROWSER_SCREENSHOTS");
        const file = `${String(++shot).padStart(2, "0")}-${name.replace(/\W+/g, "-")}.png`;
        if (dir) await page.screenshot({ path: `${dir}/${file}`, fullPage: true });
      },
      mark: () => dev.lines.length,
      codeAfter: (mark, phone) => smsCode(dev, mark, phone),
    });
    current = "stop deno task dev";
    await browser.close();
    browser = undefined;
    dev.signal("SIGINT");
    assert.equal((await dev.exited).code, 0, dev.lines.slice(-10).join("\n"));
  } catch (err) {
    const shots = await failureScreenshots(pages);
    throw new Error(
      `browser journey failed at "${current}"${shots}\npage errors: ${
        pageErrors.join("; ") || "none"
      }\nlast lines of deno task dev:\n${dev.lines.slice(-30).join("\n")}`,
      { cause: err },
    );
  } finally {
    await browser?.close();
    dev.signal("SIGKILL");
    await dev.exited;
    await Deno.remove(new URL(dataDir, ROOT), { recursive: true }).catch(() => {});
    await Deno.remove(new URL(`${dataDir}.lock`, ROOT)).catch(() => {});
  }
}

function devEnv(dataDir: string): Record<string, string> {
  return {
    ...processEnv(),
    AUTH_PORT: "0",
    OTP_PORT: "0",
    DEV_DATA_DIR: dataDir,
    // The journey asks for several codes for one number within a minute; the
    // per-number cooldown has tests of its own.
    OTP_SEND_COOLDOWN_SECONDS: "0",
  };
}

/**
 * The code of the first 📱 SMS line to `phone` after line `mark`, once auth-service
 * has stored its challenge (the SMS is printed a moment before that).
 */
async function smsCode(dev: Service, mark: number, phone: string): Promise<string> {
  const line = await dev.waitForLine((l) => parseConsoleSmsLine(l)?.to === phone, 20_000, mark);
  const at = dev.lines.indexOf(line, mark);
  await dev.waitForLine((l) => l.includes('"msg":"challenge received"'), 20_000, at);
  return codeInConsoleLine(line);
}

async function fillPhone(page: Page, phone: string): Promise<void> {
  await page.getByLabel("Phone number", { exact: true }).fill(phone);
}

async function enterCode(page: Page, input: string, code: string, button: string | RegExp) {
  await page.locator(input).fill(code);
  await page.getByRole("button", { name: button }).click();
}

/** Waits for a view to show; if the page shows an error instead, fails with its text. */
async function until(page: Page, view: string): Promise<void> {
  const shown = page.locator(`${view}:not([hidden])`);
  const error = page.locator("#error:not([hidden])");
  await shown.or(error).first().waitFor();
  if (await error.isVisible()) {
    throw new Error(`the page shows an error: ${await error.innerText()}`);
  }
}

/** Waits until the sessions table has exactly `n` rows. */
async function rows(page: Page, n: number): Promise<void> {
  const row = page.locator("#sessions-body tr");
  await row.nth(n - 1).waitFor({ state: "attached" });
  await row.nth(n).waitFor({ state: "detached" });
}

/** The text of the error region (an alert) once it shows. */
async function shownError(page: Page): Promise<string> {
  const error = page.getByRole("alert");
  await error.waitFor();
  return await error.innerText();
}

function status(page: Page): Promise<string> {
  return page.getByRole("status").innerText();
}

async function failureScreenshots(pages: Page[]): Promise<string> {
  if (pages.length === 0) return "";
  const dir = await Deno.makeTempDir({ prefix: "browser-test-" });
  const saved: string[] = [];
  for (const [i, page] of pages.entries()) {
    const path = `${dir}/page-${i + 1}.png`;
    try {
      await page.screenshot({ path, fullPage: true });
      saved.push(path);
    } catch { /* the page may be gone with the browser */ }
  }
  const list = saved.join(", ") || "none could be taken";
  console.error(`browser test screenshots: ${list}`);
  return `; screenshots: ${list}`;
}
