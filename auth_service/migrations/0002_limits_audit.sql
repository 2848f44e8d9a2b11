-- Limits that hold across replicas, per-number locks and the audit trail.

-- Sliding-window log: one row per counted event; old rows are swept periodically.
create table auth.rate_events (
  key text not null,
  at timestamptz not null default now()
);
create index rate_events_key_at_idx on auth.rate_events (key, at desc);

-- Consecutive wrong codes across challenges; a number is locked past the threshold.
create table auth.number_locks (
  phone_number text primary key,
  consecutive_failures integer not null default 0,
  locked_until timestamptz
);

-- Security-relevant events. Never a code or a token.
create table auth.audit_events (
  id bigserial primary key,
  at timestamptz not null default now(),
  event text not null,
  phone_number text,
  client_address text,
  outcome text not null,
  request_id text
);
create index audit_events_phone_idx on auth.audit_events (phone_number, at);
create index challenges_expires_idx on auth.challenges (expires_at);
create index sessions_expires_idx on auth.sessions (expires_at);
create index inbox_handled_idx on auth.inbox (handled_at);
