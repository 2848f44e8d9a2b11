-- Limits counted by the shared limits engine (one short statement per event, no lock
-- held across a request's transaction) instead of a log of events under advisory locks.
drop table auth.rate_events;

-- Consecutive wrong codes per number and client address (IPv6 per /64), so nobody
-- else's mistakes lock a user out; client_key '*' counts every address together, the
-- per-number ceiling. A count ages out once a lock window has passed without failures.
drop table auth.number_locks;
create table auth.wrong_code_locks (
  phone_number text not null,
  client_key text not null,
  consecutive_failures integer not null default 0,
  last_failure_at timestamptz not null default now(),
  locked_until timestamptz,
  primary key (phone_number, client_key)
);
create index wrong_code_locks_last_failure_idx on auth.wrong_code_locks (last_failure_at);

-- The caller's own X-Request-Id beside the server's; refusals of one key aggregated into
-- one row per window, with a count.
alter table auth.audit_events
  add column client_request_id text,
  add column count integer not null default 1,
  add column window_start timestamptz;
create unique index audit_events_refusal_idx on auth.audit_events
  (event, outcome, coalesce(phone_number, ''), coalesce(client_address, ''), window_start)
  where window_start is not null;
create index audit_events_at_idx on auth.audit_events (at);
create index users_unverified_idx on auth.users (created_at) where verified_at is null;

-- include: limits_v1

-- include: limits_v2
