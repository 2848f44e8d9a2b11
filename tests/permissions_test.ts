// Each service has one named permission set in deno.json, granting exactly the variables
// it reads and never more; its task and its compile step use that set and no flag of
// their own.
import assert from "node:assert/strict";
import { AUTH_ENV } from "../auth_service/config.ts";
import { OTP_ENV } from "../otp_service/config.ts";
import { taskArgs } from "../testing/processes.ts";

interface PermissionSet {
  env?: string[] | { allow?: string[]; ignore?: string[] };
  read?: string[];
  [kind: string]: unknown;
}

const config = JSON.parse(
  await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
) as { permissions: Record<string, PermissionSet>; tasks: Record<string, string> };

function set(name: string): PermissionSet {
  const s = config.permissions[name];
  assert.ok(s, `deno.json has no permission set "${name}"`);
  return s;
}

function allowedEnv(s: PermissionSet): string[] {
  const env = Array.isArray(s.env) ? s.env : s.env?.allow;
  assert.ok(Array.isArray(env), "the set lists its variables");
  return [...env].sort();
}

const SERVICES = [
  ["auth", AUTH_ENV, "auth_service"],
  ["otp", OTP_ENV, "otp_service"],
] as const;

for (const [name, names, dir] of SERVICES) {
  Deno.test(`the ${name} permission set allows exactly the variables ${name}-service reads`, () => {
    // postgres.js reads PGAPPNAME unconditionally; nothing else is added.
    assert.deepEqual(allowedEnv(set(name)), [...names, "PGAPPNAME"].sort());
  });

  Deno.test(`the ${name} permission set reads only its migrations and grants nothing broad`, () => {
    const s = set(name);
    assert.deepEqual(s.read, [`./${dir}/migrations`]);
    assert.equal(s.net, true);
    assert.deepEqual(Object.keys(s).sort(), ["env", "net", "read"]);
  });

  Deno.test(`the ${name} task runs its service with the ${name} set and no flag of its own`, async () => {
    const args = await taskArgs(name);
    assert.ok(args.includes(`--permission-set=${name}`), args.join(" "));
    assert.equal(args.at(-1), `${dir}/main.ts`);
    assert.deepEqual(args.filter((a) => /^-(A|[A-Z]$|-allow|-ignore|-deny)/.test(a)), []);
  });

  Deno.test(`the compile task builds ${name}-service with the ${name} set`, () => {
    const step = config.tasks.compile!.split("&&").map((s) => s.trim().split(/\s+/))
      .find((a) => a.at(-1) === `${dir}/main.ts`);
    assert.ok(step, `compile builds ${dir}/main.ts`);
    assert.ok(step.includes(`--permission-set=${name}`), step.join(" "));
    assert.deepEqual(step.filter((a) => /^-(A|[A-Z]$|-allow|-ignore|-deny)/.test(a)), []);
  });
}

Deno.test("only otp-service may read the Twilio variables", () => {
  assert.ok(!allowedEnv(set("auth")).some((n) => n.startsWith("TWILIO_")));
  assert.ok(allowedEnv(set("otp")).includes("TWILIO_AUTH_TOKEN"));
});

Deno.test("variables the Twilio client probes are ignored (read as unset), not granted", () => {
  const env = set("otp").env;
  assert.ok(env && !Array.isArray(env));
  assert.deepEqual(
    [...env.ignore ?? []].sort(),
    ["DEBUG", "HTTP_PROXY", "TWILIO_CA_BUNDLE", "TWILIO_EDGE", "TWILIO_REGION"],
  );
  for (const n of env.ignore ?? []) assert.ok(!allowedEnv(set("otp")).includes(n), n);
});

Deno.test("deno applies the auth set: a variable in it is readable, HOME is not", async () => {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      `console.log(Deno.env.get("AUTH_PORT"));
       try { Deno.env.get("HOME"); console.log("HOME readable"); }
       catch (e) { console.log((e as Error).name); }`,
    );
    const out = await new Deno.Command("deno", {
      args: ["run", "--quiet", "--config=deno.json", "--permission-set=auth", script],
      cwd: new URL("../", import.meta.url),
      env: { AUTH_PORT: "4242" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    assert.deepEqual(text.trim().split("\n"), ["4242", "NotCapable"]);
  } finally {
    await Deno.remove(script);
  }
});
