-- auth-service schema: users, OTP challenges (keyed MACs only), sessions (SHA-256 of
-- the token only), the outbox of messages to publish and the inbox of messages handled.

create table auth.users (
  id uuid primary key default gen_random_uuid(),
  phone_number text not null unique,
  created_at timestamptz not null default now(),
  verified_at timestamptz
);

-- One live challenge per number and purpose: a newer code replaces an older one.
create table auth.challenges (
  phone_number text not null,
  purpose text not null check (purpose in ('signup', 'login')),
  request_id text not null,
  code_mac bytea not null,
  issued_at timestamptz not null,
  expires_at timestamptz not null,
  failed_attempts integer not null default 0,
  consumed_at timestamptz,
  primary key (phone_number, purpose)
);

create table auth.sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  token_hash bytea not null unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  last_seen_at timestamptz not null default now(),
  revoked_at timestamptz
);
create index sessions_user_idx on auth.sessions (user_id);

-- Bus messages already handled, so a redelivery changes nothing.
create table auth.inbox (
  message_id text primary key,
  handled_at timestamptz not null default now()
);

create table auth.outbox (
  id bigserial primary key,
  message_id text not null,
  exchange text not null,
  routing_key text not null,
  type text not null,
  content_type text not null,
  payload bytea not null,
  correlation_id text,
  created_at timestamptz not null default now(),
  available_at timestamptz not null default now(),
  attempts integer not null default 0,
  last_error text
);
create index outbox_available_idx on auth.outbox (available_at, id);
