-- Codes of purpose phone_change go to the number a signed-in user wants to move to.
alter table otp.requests drop constraint requests_purpose_check;
alter table otp.requests add constraint requests_purpose_check
  check (purpose in ('signup', 'login', 'phone_change'));
alter table otp.challenges drop constraint challenges_purpose_check;
alter table otp.challenges add constraint challenges_purpose_check
  check (purpose in ('signup', 'login', 'phone_change'));
