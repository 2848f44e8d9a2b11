-- otp-service schema: every code request it has seen (the idempotency record), with
-- the keyed MAC of the code it sent, never the code; and its outbox.

create table otp.requests (
  request_id text primary key,
  phone_number text not null,
  purpose text not null check (purpose in ('signup', 'login')),
  status text not null check (status in ('pending', 'sent', 'failed', 'refused')),
  code_mac bytea,
  issued_at timestamptz,
  expires_at timestamptz,
  provider text,
  provider_id text,
  error text,
  client_address text,
  trace_id text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index requests_phone_idx on otp.requests (phone_number, created_at);

create table otp.outbox (
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
create index outbox_available_idx on otp.outbox (available_at, id);
