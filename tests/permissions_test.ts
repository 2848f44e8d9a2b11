// The service tasks grant exactly the variables each service reads, and never -A.
import assert from "node:assert/strict";
import { AUTH_ENV } from "../auth_service/config.ts";
import { OTP_ENV } from "../otp_service/config.ts";
import { taskArgs } from "../testing/processes.ts";

function envFlag(args: string[]): string[] {
  const flag = args.find((a) => a.startsWith("--allow-env="));
  assert.ok(flag, "--allow-env lists its variables");
  return flag.slice("--allow-env=".length).split(",").sort();
}

for (const [task, names] of [["auth", AUTH_ENV], ["otp", OTP_ENV]] as const) {
  Deno.test(`the ${task} task allows exactly the variables ${task}-service reads`, async () => {
    const args = await taskArgs(task);
    // postgres.js reads PGAPPNAME unconditionally; nothing else is added.
    assert.deepEqual(envFlag(args), [...names, "PGAPPNAME"].sort());
    for (const broad of ["-A", "--allow-all", "--allow-env", "--allow-run", "--allow-write"]) {
      assert.ok(!args.includes(broad), `${task} must not use ${broad}`);
    }
    assert.ok(!args.some((a) => a.startsWith("--allow-write") || a.startsWith("--allow-run")));
  });
}

Deno.test("only otp-service may read the Twilio variables", async () => {
  assert.ok(!envFlag(await taskArgs("auth")).some((n) => n.startsWith("TWILIO_")));
  assert.ok(envFlag(await taskArgs("otp")).includes("TWILIO_AUTH_TOKEN"));
});
