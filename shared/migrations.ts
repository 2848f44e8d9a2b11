// Numbered SQL migrations, applied once per schema however many replicas start together.
import type { Logger } from "./log.ts";
import type { Sql } from "./postgres.ts";

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Reads `NNNN_name.sql` files from a directory, in version order. */
export async function readMigrations(dir: URL): Promise<Migration[]> {
  const out: Migration[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const m = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(entry.name);
    if (!entry.isFile || !m) continue;
    out.push({
      version: Number(m[1]),
      name: m[2]!,
      sql: await Deno.readTextFile(new URL(entry.name, dir)),
    });
  }
  out.sort((a, b) => a.version - b.version);
  // Two files of one version would apply one and silently skip the other.
  for (let i = 1; i < out.length; i++) {
    if (out[i]!.version === out[i - 1]!.version) {
      throw new Error(`two migrations share version ${out[i]!.version} in ${dir.pathname}`);
    }
  }
  return out;
}

/** Replaces each line `-- include: NAME` with `includes[NAME]` (SQL both services install). */
export function expandIncludes(
  migrations: Migration[],
  includes: Record<string, string> = {},
): Migration[] {
  return migrations.map((m) => ({
    ...m,
    sql: m.sql.replace(/^-- include: ([a-z0-9_]+)$/gm, (_, name: string) => {
      const text = includes[name];
      if (text === undefined) throw new Error(`migration ${m.version} includes unknown ${name}`);
      return text;
    }),
  }));
}

/** `dir`'s migrations with their includes expanded, applied to `schema` (for tests and benches). */
export async function migrateFromDir(
  sql: Sql,
  schema: string,
  dir: URL,
  includes: Record<string, string>,
  log: Logger,
): Promise<void> {
  await migrate(sql, schema, expandIncludes(await readMigrations(dir), includes), log);
}

/**
 * Applies pending migrations in one transaction under an advisory lock, so replicas
 * starting together apply each migration exactly once.
 */
export async function migrate(
  sql: Sql,
  schema: string,
  migrations: Migration[],
  log: Logger,
): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext(${"migrations:" + schema}))`;
    // Created only when missing: a service role that owns its schema (and may not create
    // schemas in the database) can still migrate it.
    const [exists] = await tx`select 1 from pg_namespace where nspname = ${schema}`;
    if (!exists) await tx.unsafe(`create schema ${schema}`);
    await tx.unsafe(`create table if not exists ${schema}.schema_migrations (
      version integer primary key,
      name text not null,
      applied_at timestamptz not null default now())`);
    const done = new Set(
      (await tx.unsafe(`select version from ${schema}.schema_migrations`)).map((r) =>
        Number(r.version)
      ),
    );
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await tx.unsafe(m.sql);
      await tx.unsafe(`insert into ${schema}.schema_migrations (version, name) values ($1, $2)`, [
        m.version,
        m.name,
      ]);
      log.info("migration applied", { schema, version: m.version, name: m.name });
    }
  });
}

export async function migrationsApplied(
  sql: Sql,
  schema: string,
  migrations: Migration[],
): Promise<boolean> {
  const last = migrations.at(-1)?.version ?? 0;
  const rows = await sql.unsafe(
    `select coalesce(max(version), 0) as v from ${schema}.schema_migrations`,
  );
  return Number(rows[0]?.v ?? 0) >= last;
}
