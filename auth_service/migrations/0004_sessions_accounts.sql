-- Sessions as rows a user can see and end, with rotating tokens; phone-change codes.

alter table auth.challenges drop constraint challenges_purpose_check;
alter table auth.challenges add constraint challenges_purpose_check
  check (purpose in ('signup', 'login', 'phone_change'));

-- Recorded when the session is created, shown in ListSessions; null when unknown.
alter table auth.sessions add column client_address text;
alter table auth.sessions add column user_agent text;

-- Every token a session has had, by SHA-256. The current ones have replaced_at null; a
-- replaced one is kept for the session's life so that presenting it again (after the
-- grace) is recognised as reuse. Concurrent refreshes within the grace may leave a
-- session with more than one current token (one per tab).
create table auth.session_tokens (
  token_hash bytea primary key,
  session_id uuid not null references auth.sessions (id) on delete cascade,
  issued_at timestamptz not null default now(),
  replaced_at timestamptz
);
create index session_tokens_session_idx on auth.session_tokens (session_id);

insert into auth.session_tokens (token_hash, session_id, issued_at)
  select token_hash, id, created_at from auth.sessions;
alter table auth.sessions drop column token_hash;
