import assert from "node:assert/strict";
import { ConsoleSmsSender, formatConsoleSmsLine, parseConsoleSmsLine } from "./console_sender.ts";

const message = {
  to: "+14155550123",
  body: "Your verification code is 123456. It expires in 5 minutes.",
};

Deno.test("console sender writes exactly one parseable line per SMS with destination and full text", async () => {
  const lines: string[] = [];
  const sender = new ConsoleSmsSender((line) => lines.push(line));

  await sender.send(message);

  assert.equal(lines.length, 1);
  assert.equal(
    lines[0],
    '[sms] to=+14155550123 body="Your verification code is 123456. It expires in 5 minutes."',
  );
  assert.deepEqual(parseConsoleSmsLine(lines[0]!), message);
});

Deno.test("console sender returns a distinct console- provider id per send", async () => {
  const sender = new ConsoleSmsSender(() => {});
  const a = await sender.send(message);
  const b = await sender.send(message);
  assert.match(a.providerId, /^console-[0-9a-f-]{36}$/);
  assert.notEqual(a.providerId, b.providerId);
});

Deno.test("a body with quotes and newlines stays on one line and round-trips", () => {
  const tricky = { to: "+447700900123", body: 'Code "654321"\nline two \\ end' };
  const line = formatConsoleSmsLine(tricky);
  assert.ok(!line.includes("\n"));
  assert.deepEqual(parseConsoleSmsLine(line), tricky);
});

Deno.test("parseConsoleSmsLine ignores other output and tolerates a prefix or trailing CR", () => {
  assert.equal(parseConsoleSmsLine('{"level":"info","msg":"otp issued"}'), null);
  assert.equal(parseConsoleSmsLine("[sms] to=+1415 body=unquoted"), null);
  assert.deepEqual(
    parseConsoleSmsLine(`otp-service | ${formatConsoleSmsLine(message)}\r`),
    message,
  );
});
