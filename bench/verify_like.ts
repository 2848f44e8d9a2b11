// PostgreSQL's own rate for the write a code check does: consume one challenge row
// (UPDATE … RETURNING) and create one session row (INSERT), in one transaction.
import { psql } from "./load.ts";

const ROWS = 100_000;

export async function verifyLikeSchema(url: string): Promise<void> {
  await psql(
    url,
    `create table challenges (id bigint primary key, phone_number text not null,
       attempts int not null default 0, consumed_at timestamptz);
     insert into challenges (id, phone_number)
       select i, '+1415' || (2000000 + i) from generate_series(1, ${ROWS}) i;
     create table sessions (id bigserial primary key, user_id bigint not null,
       token_hash bytea not null, created_at timestamptz not null default now());`,
  );
  await psql(url, "vacuum analyze challenges");
}

export async function verifyLikeScript(): Promise<{ file: string; remove(): Promise<void> }> {
  const file = await Deno.makeTempFile({ prefix: "bench-verify-", suffix: ".sql" });
  await Deno.writeTextFile(
    file,
    `\\set id random(1, ${ROWS})
BEGIN;
UPDATE challenges SET attempts = attempts + 1, consumed_at = now() WHERE id = :id RETURNING phone_number;
INSERT INTO sessions (user_id, token_hash) VALUES (:id, sha256(random()::text::bytea));
END;
`,
  );
  return { file, remove: () => Deno.remove(file) };
}
