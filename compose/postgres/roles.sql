-- Run once by the postgres image on an empty data directory. One login role per
-- service, owning its own schema and nothing else: neither can read the other's
-- tables, create schemas, or use public. Passwords come from the container's
-- environment (psql's \getenv), never from this file.
\getenv auth_password AUTH_DB_PASSWORD
\getenv otp_password OTP_DB_PASSWORD
create role auth_service login password :'auth_password';
create role otp_service login password :'otp_password';
create schema auth authorization auth_service;
create schema otp authorization otp_service;
revoke all on database postgres from public;
revoke create on schema public from public;
grant connect on database postgres to auth_service, otp_service;
