-- Every key of the tables that grow with the accounts holds the account column.
--
-- This is the rule a distributed Postgres (Citus) sets for tables distributed by a column:
-- a primary key, a unique index or a foreign key can only be enforced on one shard when it
-- holds the distribution column. follow_jobs (source_user_id), attempts (account_user_id)
-- and account_credentials (user_id) would be distributed by the account, colocated with
-- accounts (user_id). On one node it costs nothing: ids stay unique (they come from one
-- sequence each), and a key that starts with the id still finds a row by its id alone.
--
-- account_credentials already keys on user_id, and its foreign key to accounts is on it.
-- follow_jobs' other unique index (one active job per source and target) starts with the
-- source. tests/integration/schema.rs checks the rule against the catalog.
--
-- Rebuilding a primary key locks the table for the time it takes to build the index.

ALTER TABLE followq.follow_jobs
    DROP CONSTRAINT follow_jobs_pkey,
    ADD CONSTRAINT follow_jobs_pkey PRIMARY KEY (id, source_user_id);

ALTER TABLE followq.attempts
    DROP CONSTRAINT attempts_pkey,
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (id, account_user_id);
