-- One live challenge per number and purpose: every request while it is live resends its
-- code, which is derived from OTP_HMAC_KEY and challenge_id, so nothing secret is kept.
create table otp.challenges (
  phone_number text not null,
  purpose text not null check (purpose in ('signup', 'login')),
  challenge_id text not null,
  issued_at timestamptz not null,
  expires_at timestamptz not null,
  primary key (phone_number, purpose)
);
create index challenges_expires_idx on otp.challenges (expires_at);

-- Provider calls made for a request, counted before each call (redeliveries included),
-- and whether one may have delivered ("unconfirmed": timed out, so the code is published
-- in case it arrives). The code is no longer kept: it is derived from the challenge.
alter table otp.requests
  add column challenge_id text,
  add column attempts integer not null default 0,
  drop column code_mac,
  drop constraint requests_status_check,
  add constraint requests_status_check
    check (status in ('pending', 'sent', 'unconfirmed', 'failed', 'refused'));

-- include: limits_v1
