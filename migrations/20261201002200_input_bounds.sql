-- Bounds at the contract: values the schema accepted but nothing can use.
--
-- * user ids with leading zeros: X ids have none, and '0007' next to '7' would be two rows
--   for one user, so one follow could be queued twice past the one-active-job index; '0'
--   alone is no X id either;
-- * run_at of 'infinity', '-infinity' or a year the daemon's clock types cannot hold: every
--   read of such a row failed or panicked;
-- * priorities beyond a range anyone means;
-- * tokens of megabytes.
--
-- Rows written before these rules are brought within them first, so that every constraint can
-- be checked against the whole table, and no statement that updates many rows at once (a
-- claim, a batch of outcomes) can ever fail because of one old row.

-- Run times out of range: a time before 2000 meant "now" (any past time is ready at once), one
-- after 2100 (or infinity) meant "never", which the end of 2099 still means.
UPDATE followq.follow_jobs SET run_at = '2000-01-01 00:00:00+00'
WHERE run_at < '2000-01-01 00:00:00+00';
UPDATE followq.follow_jobs SET run_at = '2099-12-31 23:59:59+00'
WHERE run_at >= '2100-01-01 00:00:00+00';

-- Priorities out of range keep their order at the ends of the range.
UPDATE followq.follow_jobs SET priority = greatest(-1000, least(1000, priority))
WHERE priority NOT BETWEEN -1000 AND 1000;

-- Active jobs naming a user id with a leading zero cannot be sent for the user meant: they
-- are cancelled, saying why (the inserting service learns it from followq_job_finished).
UPDATE followq.follow_jobs
SET state = 'cancelled', finished_at = now(), updated_at = now(),
    leased_by = NULL, lease_expires_at = NULL,
    last_error = jsonb_build_object('kind', 'invalid_user_id',
        'detail', 'source_user_id or target_user_id starts with 0: X user ids have no leading zeros; enqueue it again without them')
WHERE state IN ('queued', 'running')
  AND (source_user_id ~ '^0' OR target_user_id ~ '^0');

-- Accounts registered under such an id are disabled (the daemon never leases a disabled
-- account); register the account again under its id without zeros.
UPDATE followq.accounts
SET status = 'disabled', paused_until = NULL, leased_by = NULL, lease_expires_at = NULL,
    pause_reason = 'the user id starts with 0: X user ids have no leading zeros; register the account again without them',
    updated_at = now()
WHERE user_id ~ '^0';

ALTER TABLE followq.follow_jobs
    ADD CONSTRAINT follow_jobs_run_at_must_be_between_2000_and_2100
        CHECK (run_at >= '2000-01-01 00:00:00+00' AND run_at < '2100-01-01 00:00:00+00'),
    ADD CONSTRAINT follow_jobs_priority_must_be_between_minus_1000_and_1000
        CHECK (priority BETWEEN -1000 AND 1000);

-- The id rules hold for every new or changed row at once. Old finished jobs (and disabled
-- accounts) that break them are history, not work: the constraints are validated against the
-- whole table below only when none is left.
ALTER TABLE followq.follow_jobs
    ADD CONSTRAINT follow_jobs_source_user_id_must_not_start_with_0
        CHECK (source_user_id ~ '^[1-9]') NOT VALID,
    ADD CONSTRAINT follow_jobs_target_user_id_must_not_start_with_0
        CHECK (target_user_id ~ '^[1-9]') NOT VALID;
ALTER TABLE followq.accounts
    ADD CONSTRAINT accounts_user_id_must_not_start_with_0
        CHECK (user_id ~ '^[1-9]') NOT VALID;

-- A sealed token of the longest accepted size (4096 bytes) takes about 5.5 kB.
ALTER TABLE followq.account_credentials
    ADD CONSTRAINT account_credentials_tokens_must_be_at_most_8192_bytes
        CHECK (coalesce(octet_length(oauth2_access_token), 0) <= 8192
           AND coalesce(octet_length(oauth2_refresh_token), 0) <= 8192
           AND coalesce(octet_length(oauth1_token), 0) <= 8192
           AND coalesce(octet_length(oauth1_token_secret), 0) <= 8192) NOT VALID;

DO $$
DECLARE
    pending text[] := ARRAY[
        'follow_jobs.follow_jobs_source_user_id_must_not_start_with_0',
        'follow_jobs.follow_jobs_target_user_id_must_not_start_with_0',
        'accounts.accounts_user_id_must_not_start_with_0',
        'account_credentials.account_credentials_tokens_must_be_at_most_8192_bytes'];
    item text;
BEGIN
    FOREACH item IN ARRAY pending LOOP
        BEGIN
            EXECUTE format('ALTER TABLE followq.%I VALIDATE CONSTRAINT %I',
                           split_part(item, '.', 1), split_part(item, '.', 2));
        EXCEPTION WHEN check_violation THEN
            RAISE NOTICE 'followq: % holds older rows that break it; new and changed rows obey it',
                split_part(item, '.', 2);
        END;
    END LOOP;
END
$$;
