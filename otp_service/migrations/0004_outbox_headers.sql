-- AMQP headers of each outbox message (the trace context), published with it.
alter table otp.outbox add column headers jsonb not null default '{}';
