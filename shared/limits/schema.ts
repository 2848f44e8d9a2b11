// The tables and functions of the limits engine, installed into a service's own schema
// by its numbered migration (a line `-- include: limits_v1`). Written once here so both
// services run the same engine; a change is a new version, never an edit of this one.
import { schemaName } from "../postgres.ts";

/**
 * Each key keeps 61 counters of window/60 seconds each, so the row stays small however
 * large the limit: an event counts for between one window and 61/60 of it, never less,
 * so a limit can be late to lift but never admits more than it allows.
 */
const LIMITS_V1 = `
create table {schema}.limit_counters (
  key text primary key,
  slot_seconds float8 not null,
  first_slot bigint not null,
  counts integer[] not null,
  updated_at timestamptz not null default now()
);
create index limit_counters_updated_idx on {schema}.limit_counters (updated_at);

-- Events already admitted, by the caller's id for them: a retry of the same event (a
-- redelivered message whose handling failed after its admission) is not charged twice,
-- so a database blip cannot turn an admitted request into a refused one.
create table {schema}.limit_admissions (
  event_id text primary key,
  at float8 not null,
  created_at timestamptz not null default now()
);
create index limit_admissions_created_idx on {schema}.limit_admissions (created_at);

-- The 61 counters of slots cur-60 .. cur, carried over from a row last written at
-- first_slot, with \`added\` events in the current slot. A changed window, or a clock
-- that went back, keeps every counted event, as if it happened now.
create function {schema}.limit_slots(
  counts integer[], first_slot bigint, old_width float8, width float8, cur bigint,
  added integer)
returns integer[] language sql immutable as $fn$
  select case
    when old_width <> width then
      array_fill(0, array[60]) || (coalesce((select sum(c)::int from unnest(counts) c), 0) + added)
    else array(
      select coalesce(counts[(cur - 60 + s - first_slot + 1)::int], 0)
             + case when s = 60 then added + coalesce((
                 select sum(c)::int from unnest(counts) with ordinality u(c, i)
                  where first_slot + i - 1 > cur), 0) else 0 end
        from generate_series(0, 60) s order by s)
  end
$fn$;

-- Admits one event under every rule (keys[i] may see limits[i] events per windows[i]
-- seconds) or under none. Rows are locked in key order, so concurrent calls on
-- overlapping keys cannot deadlock, and only for this one statement. Returns the
-- tripped rule with the longest wait (1-based) and that wait, and the event time
-- that refund() needs. With an event_id, an event admitted before is admitted again
-- without being counted again.
create function {schema}.admit(
  keys text[], limits integer[], windows float8[], event_id text default null,
  out admitted boolean, out rule integer, out retry_after float8, out at float8)
language plpgsql as $fn$
declare
  i integer;
  width float8;
  cur bigint;
  r record;
  c integer[];
  total bigint;
  wait float8;
begin
  if cardinality(keys) <> cardinality(limits) or cardinality(keys) <> cardinality(windows) then
    raise exception 'admit: keys, limits and windows differ in length';
  end if;
  if (select count(distinct k) from unnest(keys) k) <> cardinality(keys) then
    raise exception 'admit: a key appears twice';
  end if;
  at := extract(epoch from clock_timestamp());
  admitted := true;
  if event_id is not null then
    -- A concurrent admission of the same event waits here on the key, then finds it.
    insert into {schema}.limit_admissions as a (event_id, at) values (admit.event_id, admit.at)
      on conflict on constraint limit_admissions_pkey do nothing;
    if not found then
      select a.at into at from {schema}.limit_admissions a where a.event_id = admit.event_id;
      return;
    end if;
  end if;
  for i in select o from unnest(keys) with ordinality u(k, o) order by k loop
    if not (windows[i] > 0) or limits[i] is null or limits[i] < 0 then
      raise exception 'admit: bad limit or window for %', keys[i];
    end if;
    width := windows[i] / 60;
    cur := floor(at / width)::bigint;
    select l.first_slot, l.slot_seconds, l.counts into r
      from {schema}.limit_counters l where l.key = keys[i] for update;
    if not found then
      insert into {schema}.limit_counters (key, slot_seconds, first_slot, counts)
      values (keys[i], width, cur - 60, array_fill(0, array[61]))
      on conflict (key) do nothing;
      select l.first_slot, l.slot_seconds, l.counts into r
        from {schema}.limit_counters l where l.key = keys[i] for update;
    end if;
    c := {schema}.limit_slots(r.counts, r.first_slot, r.slot_seconds, width, cur, 0);
    total := (select coalesce(sum(x), 0) from unnest(c) x);
    if total >= limits[i] then
      wait := windows[i];
      if limits[i] > 0 then
        -- The oldest slots leave the count first; wait until enough of them have.
        for s in 0 .. 60 loop
          total := total - c[s + 1];
          if total < limits[i] then
            wait := (cur + 1 + s) * width - at;
            exit;
          end if;
        end loop;
      end if;
      if admitted or wait > retry_after then
        rule := i;
        retry_after := greatest(wait, 0);
      end if;
      admitted := false;
    end if;
  end loop;
  if not admitted then
    if event_id is not null then
      delete from {schema}.limit_admissions a where a.event_id = admit.event_id;
    end if;
    return;
  end if;
  for i in select o from unnest(keys) with ordinality u(k, o) order by k loop
    width := windows[i] / 60;
    cur := floor(at / width)::bigint;
    update {schema}.limit_counters l
       set counts = {schema}.limit_slots(l.counts, l.first_slot, l.slot_seconds, width, cur, 1),
           first_slot = cur - 60, slot_seconds = width, updated_at = now()
     where l.key = keys[i];
  end loop;
end
$fn$;

-- Gives back the event admit() recorded at \`at\` (when what it admitted did not happen),
-- if its slot is still counted.
create function {schema}.refund(keys text[], windows float8[], at float8)
returns void language plpgsql as $fn$
declare
  i integer;
  n integer;
begin
  for i in select o from unnest(keys) with ordinality u(k, o) order by k loop
    select (floor(at / l.slot_seconds)::bigint - l.first_slot + 1)::int into n
      from {schema}.limit_counters l
     where l.key = keys[i] and l.slot_seconds = windows[i] / 60 for update;
    if n between 1 and 61 then
      update {schema}.limit_counters l set counts[n] = l.counts[n] - 1
       where l.key = keys[i] and l.counts[n] > 0;
    end if;
  end loop;
end
$fn$;
`;

/**
 * limit_slots again, the same result in PL/pgSQL. PostgreSQL plans the body of a SQL
 * function that it cannot inline (this one has subqueries) again on every call, and
 * admit() calls it twice per key: that planning was most of an admission's CPU. A
 * PL/pgSQL function keeps its plans for the session, and this one needs none.
 */
const LIMITS_V2 = `
create or replace function {schema}.limit_slots(
  counts integer[], first_slot bigint, old_width float8, width float8, cur bigint,
  added integer)
returns integer[] language plpgsql immutable as $fn$
declare
  slots integer[] := array_fill(0, array[61]);
  n integer := coalesce(array_upper(counts, 1), 0);
  slot bigint;
  later integer := 0;
begin
  if old_width <> width then
    for i in 1 .. n loop
      later := later + coalesce(counts[i], 0);
    end loop;
    slots[61] := later + added;
    return slots;
  end if;
  for i in 1 .. n loop
    slot := first_slot + i - 1;
    if slot > cur then
      later := later + coalesce(counts[i], 0);
    elsif slot >= cur - 60 then
      slots[(slot - cur + 61)::int] := coalesce(counts[i], 0);
    end if;
  end loop;
  slots[61] := slots[61] + added + later;
  return slots;
end
$fn$;
`;

/**
 * admit() again, the same outcomes for less CPU: it sums the counters in place instead
 * of building the shifted array (that is built only to name a refusal's wait), bumps one
 * counter when the row was last written in the current slot, and checks keys for
 * duplicates while ordering them. The index on updated_at goes: the sweep's condition
 * depends on each row's width, so it never used it, and without it an admission's
 * update can stay on the row's page (a HOT update) instead of writing two indexes.
 */
const LIMITS_V3 = `
drop index if exists {schema}.limit_counters_updated_idx;

create or replace function {schema}.admit(
  keys text[], limits integer[], windows float8[], event_id text default null,
  out admitted boolean, out rule integer, out retry_after float8, out at float8)
language plpgsql as $fn$
declare
  n integer := cardinality(keys);
  ord integer[];
  firsts bigint[];
  widths float8[];
  i integer;
  width float8;
  cur bigint;
  fs bigint;
  ow float8;
  cnt integer[];
  c integer[];
  total bigint;
  wait float8;
begin
  if n <> cardinality(limits) or n <> cardinality(windows) then
    raise exception 'admit: keys, limits and windows differ in length';
  end if;
  if n = 1 then
    ord := array[1];
  else
    ord := array(select o::int from unnest(keys) with ordinality u(k, o) order by k);
    for j in 2 .. n loop
      if keys[ord[j]] = keys[ord[j - 1]] then
        raise exception 'admit: a key appears twice';
      end if;
    end loop;
  end if;
  at := extract(epoch from clock_timestamp());
  admitted := true;
  if event_id is not null then
    -- A concurrent admission of the same event waits here on the key, then finds it.
    insert into {schema}.limit_admissions as a (event_id, at) values (admit.event_id, admit.at)
      on conflict on constraint limit_admissions_pkey do nothing;
    if not found then
      select a.at into at from {schema}.limit_admissions a where a.event_id = admit.event_id;
      return;
    end if;
  end if;
  firsts := array_fill(0::bigint, array[n]);
  widths := array_fill(0::float8, array[n]);
  for j in 1 .. n loop
    i := ord[j];
    if not (windows[i] > 0) or limits[i] is null or limits[i] < 0 then
      raise exception 'admit: bad limit or window for %', keys[i];
    end if;
    width := windows[i] / 60;
    cur := floor(at / width)::bigint;
    select l.first_slot, l.slot_seconds, l.counts into fs, ow, cnt
      from {schema}.limit_counters l where l.key = keys[i] for update;
    if not found then
      insert into {schema}.limit_counters (key, slot_seconds, first_slot, counts)
      values (keys[i], width, cur - 60, array_fill(0, array[61]))
      on conflict (key) do nothing;
      select l.first_slot, l.slot_seconds, l.counts into fs, ow, cnt
        from {schema}.limit_counters l where l.key = keys[i] for update;
    end if;
    -- Rows are written 61 counters long; anything else takes the general update.
    firsts[i] := case when cardinality(cnt) = 61 then fs end;
    widths[i] := ow;
    -- What limit_slots would keep, summed without building it: every slot from cur-60
    -- on (later ones too, after a clock went back), or everything after a change of
    -- window.
    total := 0;
    for s in 1 .. coalesce(array_upper(cnt, 1), 0) loop
      if ow <> width or fs + s - 1 >= cur - 60 then
        total := total + coalesce(cnt[s], 0);
      end if;
    end loop;
    if total >= limits[i] then
      wait := windows[i];
      if limits[i] > 0 then
        -- The oldest slots leave the count first; wait until enough of them have.
        c := {schema}.limit_slots(cnt, fs, ow, width, cur, 0);
        for s in 0 .. 60 loop
          total := total - c[s + 1];
          if total < limits[i] then
            wait := (cur + 1 + s) * width - at;
            exit;
          end if;
        end loop;
      end if;
      if admitted or wait > retry_after then
        rule := i;
        retry_after := greatest(wait, 0);
      end if;
      admitted := false;
    end if;
  end loop;
  if not admitted then
    if event_id is not null then
      delete from {schema}.limit_admissions a where a.event_id = admit.event_id;
    end if;
    return;
  end if;
  for j in 1 .. n loop
    i := ord[j];
    width := windows[i] / 60;
    cur := floor(at / width)::bigint;
    if widths[i] = width and firsts[i] = cur - 60 then
      -- Still in the slot the row was last written in: one counter goes up.
      update {schema}.limit_counters l set counts[61] = l.counts[61] + 1, updated_at = now()
       where l.key = keys[i];
    else
      update {schema}.limit_counters l
         set counts = {schema}.limit_slots(l.counts, l.first_slot, l.slot_seconds, width, cur, 1),
             first_slot = cur - 60, slot_seconds = width, updated_at = now()
       where l.key = keys[i];
    end if;
  end loop;
end
$fn$;
`;

/**
 * admit() again, the same outcomes in fewer statements: each key is one upsert that
 * creates its row with the event counted or counts it in the row already there (moving
 * the row to the current slot when it was written in an earlier one), and returns the
 * counters it left. v3 read every row first and wrote them after, four statements for a
 * key with no row yet, two for one with a row. A refusal takes its event back out of the
 * current slot of every key it counted it in, still inside the statement, so no other
 * caller ever sees it; a moved row stays moved, which counts exactly what the old one did.
 * Each row stays locked by its upsert until the statement ends, and every call locks in
 * one order, so concurrent calls over overlapping keys cannot deadlock: the counters
 * many events share (a budget, a country, a number block, a client address; the reason
 * is the key's first segment) come after the others, each class in key order, so a
 * shared row is held only through the end of the statement instead of through every
 * key after it.
 */
const LIMITS_V4 = `
create or replace function {schema}.admit(
  keys text[], limits integer[], windows float8[], event_id text default null,
  out admitted boolean, out rule integer, out retry_after float8, out at float8)
language plpgsql as $fn$
declare
  n integer := cardinality(keys);
  ord integer[];
  i integer;
  width float8;
  cur bigint;
  cnt integer[];
  total bigint;
  wait float8;
begin
  if n <> cardinality(limits) or n <> cardinality(windows) then
    raise exception 'admit: keys, limits and windows differ in length';
  end if;
  for i in 1 .. n loop
    if not (windows[i] > 0) or limits[i] is null or limits[i] < 0 then
      raise exception 'admit: bad limit or window for %', keys[i];
    end if;
  end loop;
  if n = 1 then
    ord := array[1];
  else
    ord := array(
      select o::int from unnest(keys) with ordinality u(k, o)
       order by split_part(k, ':', 1) in ('budget', 'country_velocity', 'prefix_velocity',
                                          'address'), k);
    for j in 2 .. n loop
      if keys[ord[j]] = keys[ord[j - 1]] then
        raise exception 'admit: a key appears twice';
      end if;
    end loop;
  end if;
  at := extract(epoch from clock_timestamp());
  admitted := true;
  if event_id is not null then
    -- A concurrent admission of the same event waits here on the key, then finds it.
    insert into {schema}.limit_admissions as a (event_id, at) values (admit.event_id, admit.at)
      on conflict on constraint limit_admissions_pkey do nothing;
    if not found then
      select a.at into at from {schema}.limit_admissions a where a.event_id = admit.event_id;
      return;
    end if;
  end if;
  for j in 1 .. n loop
    i := ord[j];
    width := windows[i] / 60;
    cur := floor(at / width)::bigint;
    insert into {schema}.limit_counters as l (key, slot_seconds, first_slot, counts)
    values (keys[i], width, cur - 60, array_fill(0, array[60]) || 1)
    on conflict (key) do update set
      counts = case
        when l.slot_seconds = excluded.slot_seconds and l.first_slot = excluded.first_slot
             and cardinality(l.counts) = 61
        then l.counts[1:60] || (l.counts[61] + 1)
        else {schema}.limit_slots(l.counts, l.first_slot, l.slot_seconds, width, cur, 1)
      end,
      first_slot = excluded.first_slot, slot_seconds = excluded.slot_seconds,
      updated_at = now()
    returning l.counts into cnt;
    -- The 61 counters now hold exactly the window's events, this one included.
    total := 0;
    for s in 1 .. 61 loop
      total := total + cnt[s];
    end loop;
    if total > limits[i] then
      wait := windows[i];
      if limits[i] > 0 then
        -- The oldest slots leave the count first; wait until enough of them have.
        total := total - 1;
        for s in 1 .. 61 loop
          total := total - cnt[s];
          if total < limits[i] then
            wait := (cur + s) * width - at;
            exit;
          end if;
        end loop;
      end if;
      if admitted or wait > retry_after then
        rule := i;
        retry_after := greatest(wait, 0);
      end if;
      admitted := false;
    end if;
  end loop;
  if not admitted then
    -- Every key counted the event in its current slot; none of them keeps it.
    update {schema}.limit_counters l set counts[61] = l.counts[61] - 1
     where l.key = any(keys);
    if event_id is not null then
      delete from {schema}.limit_admissions a where a.event_id = admit.event_id;
    end if;
  end if;
end
$fn$;

-- refund() as before, locking in admit()'s order, so a refund and an admission over
-- the same keys cannot deadlock either.
create or replace function {schema}.refund(keys text[], windows float8[], at float8)
returns void language plpgsql as $fn$
declare
  i integer;
  n integer;
begin
  for i in
    select o from unnest(keys) with ordinality u(k, o)
     order by split_part(k, ':', 1) in ('budget', 'country_velocity', 'prefix_velocity',
                                        'address'), k
  loop
    select (floor(at / l.slot_seconds)::bigint - l.first_slot + 1)::int into n
      from {schema}.limit_counters l
     where l.key = keys[i] and l.slot_seconds = windows[i] / 60 for update;
    if n between 1 and 61 then
      update {schema}.limit_counters l set counts[n] = l.counts[n] - 1
       where l.key = keys[i] and l.counts[n] > 0;
    end if;
  end loop;
end
$fn$;
`;

/**
 * admit_each(): many events, each under one rule (event i: keys[i], limits[i],
 * windows[i]), answered and counted exactly as admit() of each event alone, one after
 * another in input order, would. Each key's row is written once for all its events
 * (one upsert counting them all, and one update giving back those refused), where one
 * admit() per event wrote it once per event; so a statement that charges the calls
 * arriving together costs the database about one admission per key, not per call.
 * Keys are taken in admit()'s order (shared reasons last, each class in key order), so
 * this and admit() over overlapping keys cannot deadlock.
 */
const LIMITS_V5 = `
create function {schema}.admit_each(keys text[], limits integer[], windows float8[])
returns table (i integer, admitted boolean, rule integer, retry_after float8, at float8)
language plpgsql as $fn$
declare
  t float8 := extract(epoch from clock_timestamp());
  g record;
  width float8;
  cur bigint;
  m integer;
  cnt integer[];
  before bigint;
  took integer;
  total bigint;
  wait float8;
begin
  if cardinality(keys) <> cardinality(limits) or cardinality(keys) <> cardinality(windows) then
    raise exception 'admit_each: keys, limits and windows differ in length';
  end if;
  for j in 1 .. coalesce(cardinality(keys), 0) loop
    if keys[j] is null or not (windows[j] > 0) or limits[j] is null or limits[j] < 0 then
      raise exception 'admit_each: bad key, limit or window at %', j;
    end if;
  end loop;
  for g in
    select k, w, array_agg(o::int order by o) as os, array_agg(l order by o) as ls
      from unnest(keys, limits, windows) with ordinality u(k, l, w, o)
     group by k, w
     order by split_part(k, ':', 1) in ('budget', 'country_velocity', 'prefix_velocity',
                                        'address'), k, w
  loop
    width := g.w / 60;
    cur := floor(t / width)::bigint;
    m := cardinality(g.os);
    insert into {schema}.limit_counters as l (key, slot_seconds, first_slot, counts)
    values (g.k, width, cur - 60, array_fill(0, array[60]) || m)
    on conflict (key) do update set
      counts = case
        when l.slot_seconds = excluded.slot_seconds and l.first_slot = excluded.first_slot
             and cardinality(l.counts) = 61
        then l.counts[1:60] || (l.counts[61] + m)
        else {schema}.limit_slots(l.counts, l.first_slot, l.slot_seconds, width, cur, m)
      end,
      first_slot = excluded.first_slot, slot_seconds = excluded.slot_seconds,
      updated_at = now()
    returning l.counts into cnt;
    -- The window's events before these m.
    before := -m;
    for s in 1 .. 61 loop
      before := before + cnt[s];
    end loop;
    took := 0;
    for j in 1 .. m loop
      i := g.os[j];
      at := t;
      if before + took < g.ls[j] then
        took := took + 1;
        admitted := true;
        rule := null;
        retry_after := null;
      else
        admitted := false;
        rule := 1;
        wait := g.w;
        if g.ls[j] > 0 then
          -- As admit() does: the oldest of the events before this one leave first.
          total := before + took;
          for s in 1 .. 61 loop
            total := total - cnt[s];
            if total < g.ls[j] then
              wait := (cur + s) * width - t;
              exit;
            end if;
          end loop;
        end if;
        retry_after := greatest(wait, 0);
      end if;
      return next;
    end loop;
    if took < m then
      update {schema}.limit_counters l set counts[61] = l.counts[61] - (m - took)
       where l.key = g.k;
    end if;
  end loop;
end
$fn$;
`;

/** The SQL a migration includes, for `schema`; keyed by the name the migration uses. */
export function limitsIncludes(schema: string): Record<string, string> {
  schemaName(schema);
  return {
    limits_v1: LIMITS_V1.replaceAll("{schema}", schema),
    limits_v2: LIMITS_V2.replaceAll("{schema}", schema),
    limits_v3: LIMITS_V3.replaceAll("{schema}", schema),
    limits_v4: LIMITS_V4.replaceAll("{schema}", schema),
    limits_v5: LIMITS_V5.replaceAll("{schema}", schema),
  };
}
