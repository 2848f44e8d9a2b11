-- AMQP headers of each outbox message (the trace context), published with it.
alter table auth.outbox add column headers jsonb not null default '{}';
