import assert from "node:assert/strict";
import { readMigrations } from "./migrations.ts";

Deno.test("migrations are read in version order, and two files of one version are refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/0002_second.sql`, "select 2;");
    await Deno.writeTextFile(`${dir}/0001_first.sql`, "select 1;");
    await Deno.writeTextFile(`${dir}/notes.txt`, "not a migration");
    const url = new URL(`file://${dir}/`);
    assert.deepEqual((await readMigrations(url)).map((m) => m.name), ["first", "second"]);
    await Deno.writeTextFile(`${dir}/0002_other.sql`, "select 3;");
    await assert.rejects(() => readMigrations(url), /two migrations share version 2/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
