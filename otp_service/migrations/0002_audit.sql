-- Security-relevant events of otp-service. Never a code.
create table otp.audit_events (
  id bigserial primary key,
  at timestamptz not null default now(),
  event text not null,
  phone_number text,
  client_address text,
  outcome text not null,
  request_id text
);
create index audit_events_phone_idx on otp.audit_events (phone_number, at);
create index requests_created_idx on otp.requests (created_at);
