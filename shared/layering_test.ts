// shared/ is the bottom layer: the services, the dev launcher and the test harness
// build on it, so nothing under shared/ may import them (or anything else outside
// shared/). This scans every module under shared/, generated and vendored code
// included, and resolves each specifier the way Deno would: relative and absolute paths
// against the file, bare names through deno.json's import map.
import assert from "node:assert/strict";

const SHARED = new URL("./", import.meta.url);
const ROOT = new URL("../", SHARED);
const MODULE = /\.(?:[cm]?[jt]s|tsx|jsx)$/;

/** Every static, dynamic and re-export specifier and every require() in `source`. */
export function specifiers(source: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\b(?:import|export)\b[^'"`;]*?\bfrom\s*(['"])([^'"]+)\1/g,
    /\bimport\s*(['"])([^'"]+)\1/g,
    /\bimport\s*\(\s*(['"`])([^'"`]+)\1/g,
    /\brequire\s*\(\s*(['"`])([^'"`]+)\1/g,
    /\/\/\/\s*<reference\s+(?:path|types)\s*=\s*(['"])([^'"]+)\1/g,
    /@ts-types\s*=\s*(['"])([^'"]+)\1/g,
  ];
  for (const re of patterns) {
    for (const m of source.matchAll(re)) found.push(m[2]!);
  }
  return found;
}

/**
 * Where `specifier`, imported from `from`, resolves to: a file URL, or null for what is
 * not a file in this repository (npm:, node:, jsr:, https:, built-ins).
 */
export function resolveSpecifier(
  specifier: string,
  from: URL,
  importMap: Record<string, string>,
): URL | null {
  if (/^(?:\.{1,2}\/|\/|file:)/.test(specifier)) return new URL(specifier, from);
  if (/^[a-z][a-z0-9+.-]*:/i.test(specifier)) return null; // npm:, node:, https:, …
  // Bare: the longest import-map key that matches, exactly or as a "prefix/" entry.
  const key = Object.keys(importMap)
    .filter((k) => k === specifier || (k.endsWith("/") && specifier.startsWith(k)))
    .sort((a, b) => b.length - a.length)[0];
  if (key === undefined) return null; // a Node built-in inside vendored code
  const target = importMap[key]! + specifier.slice(key.length);
  return resolveSpecifier(target, new URL("deno.json", ROOT), {});
}

/** The specifiers in `source` (a module at `file`) that resolve outside shared/. */
export function importsOutsideShared(
  source: string,
  file: URL,
  importMap: Record<string, string>,
): string[] {
  return specifiers(source).filter((s) => {
    const target = resolveSpecifier(s, file, importMap);
    return target !== null && !target.href.startsWith(SHARED.href);
  });
}

async function* modules(dir: URL): AsyncGenerator<URL> {
  for await (const entry of Deno.readDir(dir)) {
    const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
    if (entry.isDirectory) yield* modules(url);
    else if (entry.isFile && MODULE.test(entry.name)) yield url;
  }
}

async function importMap(): Promise<Record<string, string>> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  return config.imports ?? {};
}

Deno.test("no module under shared/ imports anything outside shared/", async () => {
  const map = await importMap();
  const offences: string[] = [];
  let scanned = 0;
  for await (const file of modules(SHARED)) {
    scanned++;
    const source = await Deno.readTextFile(file);
    for (const s of importsOutsideShared(source, file, map)) {
      offences.push(`${file.href.slice(ROOT.href.length)} imports ${s}`);
    }
  }
  assert.ok(scanned > 30, `scanned only ${scanned} modules; is the walk broken?`);
  assert.deepEqual(offences, []);
});

Deno.test("the layering check flags each way of reaching outside shared/", () => {
  const file = new URL("outbox.ts", SHARED);
  const nested = new URL("gen/auth/v1/auth_pb.ts", SHARED);
  const map = { "postgres": "./shared/vendor/postgres/src/index.js", "@app/": "./auth_service/" };
  // The samples write their quotes as ~, so the scan of this very file skips them.
  const outside = (sample: string, file: URL) =>
    importsOutsideShared(sample.replaceAll("~", '"'), file, map);
  const bad = [
    `import { startAuthService } from ~../auth_service/app.ts~;`,
    `import type { Stack } from ~../testing/stack.ts~;`,
    `export { MemoryBroker } from ~../dev/memory_broker.ts~;`,
    `import ~../otp_service/main.ts~;`,
    `const m = await import(~../tests/journey_test.ts~);`,
    `import {\n  a,\n  b,\n} from ~../testing/broker.ts~;`,
    `import { x } from ~@app/service.ts~;`,
    `import { y } from ~/etc/passwd.ts~;`,
    `const z = require(~../dev/main.ts~);`,
  ];
  for (const source of bad) {
    assert.equal(outside(source, file).length, 1, source);
  }
  assert.deepEqual(
    outside(`import x from ~../../../../testing/stack.ts~;`, nested),
    ["../../../../testing/stack.ts"],
  );
  const good = [
    `import { delay } from ~./async.ts~;`,
    `import postgres from ~postgres~;`,
    `import amqp from ~amqplib~;`,
    `import { Buffer } from ~node:buffer~;`,
    `import fc from ~npm:fast-check@4~;`,
    `import { Code } from ~../../../shared/errors.ts~;`,
  ];
  for (const source of good) {
    assert.deepEqual(outside(source, nested), [], source);
  }
});
