-- Half the database work per job.
--
-- 1. The ids of a follow are checked once, when they are written, not on every update. A
--    table CHECK runs on every UPDATE of the row, whatever the update changes; a domain's
--    check runs only where a value is written to the column. Jobs are updated once or twice
--    each and their ids never change, so the regular expressions move into two domains that
--    keep the constraints' names (the error an inserting service gets names the same rule).
--
-- 2. A job is written once by the daemon, when its outcome is recorded. The claim no longer
--    marks the row `running`: the ledger row it writes (followq.attempts, with `answer_by`)
--    already says that a request is in flight, the account's lease already makes its holder
--    the only sender, and the claim locks the job row for the statement's life. Jobs in
--    flight are seen through the view followq.jobs_in_flight below. Daemons of the previous
--    release still mark jobs `running` and are still rescued as before: both kinds work on
--    this schema side by side.
--
-- 3. The ledger's time indexes are BRIN indexes: rows arrive in time order, and these
--    indexes only serve range scans (retention, the last minutes for `followq status`, the
--    requests still in flight). A BRIN index never blocks a HOT update, and costs next to
--    nothing to maintain.

-- 1. Ids in domains ---------------------------------------------------------------------

CREATE DOMAIN followq.follow_source_user_id AS text
    CONSTRAINT follow_jobs_source_user_id_must_be_1_to_19_digits
        CHECK (VALUE ~ '^[0-9]{1,19}$');
CREATE DOMAIN followq.follow_target_user_id AS text
    CONSTRAINT follow_jobs_target_user_id_must_be_1_to_19_digits
        CHECK (VALUE ~ '^[0-9]{1,19}$');

COMMENT ON DOMAIN followq.follow_source_user_id IS
    'An X user id as follow_jobs.source_user_id: 1 to 19 digits, no leading zero.';
COMMENT ON DOMAIN followq.follow_target_user_id IS
    'An X user id as follow_jobs.target_user_id: 1 to 19 digits, no leading zero.';

ALTER TABLE followq.follow_jobs
    DROP CONSTRAINT follow_jobs_source_user_id_must_be_1_to_19_digits,
    DROP CONSTRAINT follow_jobs_target_user_id_must_be_1_to_19_digits,
    DROP CONSTRAINT follow_jobs_source_user_id_must_not_start_with_0,
    DROP CONSTRAINT follow_jobs_target_user_id_must_not_start_with_0;

-- Text to a domain over text needs no rewrite; every value is checked against the domain.
ALTER TABLE followq.follow_jobs
    ALTER COLUMN source_user_id TYPE followq.follow_source_user_id,
    ALTER COLUMN target_user_id TYPE followq.follow_target_user_id;

-- The leading-zero rule holds for every value written from now on; old finished rows that
-- break it (see the input-bounds migration) are history, so it is validated only when none
-- is left.
ALTER DOMAIN followq.follow_source_user_id
    ADD CONSTRAINT follow_jobs_source_user_id_must_not_start_with_0
        CHECK (VALUE ~ '^[1-9]') NOT VALID;
ALTER DOMAIN followq.follow_target_user_id
    ADD CONSTRAINT follow_jobs_target_user_id_must_not_start_with_0
        CHECK (VALUE ~ '^[1-9]') NOT VALID;

DO $$
BEGIN
    BEGIN
        ALTER DOMAIN followq.follow_source_user_id
            VALIDATE CONSTRAINT follow_jobs_source_user_id_must_not_start_with_0;
    EXCEPTION WHEN check_violation THEN
        RAISE NOTICE 'followq: follow_jobs_source_user_id_must_not_start_with_0 holds older rows that break it; new rows obey it';
    END;
    BEGIN
        ALTER DOMAIN followq.follow_target_user_id
            VALIDATE CONSTRAINT follow_jobs_target_user_id_must_not_start_with_0;
    EXCEPTION WHEN check_violation THEN
        RAISE NOTICE 'followq: follow_jobs_target_user_id_must_not_start_with_0 holds older rows that break it; new rows obey it';
    END;
END
$$;

-- 2. Jobs in flight, from the ledger -------------------------------------------------------

-- A job is in flight while a request for it may still reach X: its ledger row has no answer
-- yet and its answer_by has not passed (a daemon of this release), or the job row says
-- `running` (a daemon of the previous release). answer_by is a few seconds after the row is
-- written (the send deadline plus the request timeout), so the rows whose answer_by is still
-- ahead are the ledger's last pages, found through the BRIN index on answer_by below: the
-- view reads the last seconds of the ledger whatever its size. (No b-tree on the unanswered
-- rows: recording an answer changes `outcome`, and must stay a HOT update.)
CREATE VIEW followq.jobs_in_flight AS
SELECT t.job_id, t.account_user_id AS source_user_id, t.worker_id, t.sent_at, t.answer_by,
       t.id AS attempt_id
FROM followq.attempts AS t
WHERE t.outcome IS NULL AND t.answer_by > now()
UNION ALL
SELECT j.id, j.source_user_id, j.leased_by, j.updated_at, j.lease_expires_at, NULL
FROM followq.follow_jobs AS j
WHERE j.state = 'running';

COMMENT ON VIEW followq.jobs_in_flight IS
    'Jobs whose request may be on its way to X right now, with the daemon that sent it. Such a job stays queued in follow_jobs until its outcome is recorded (daemons of earlier releases marked it running).';

-- 3. A BRIN index for the ledger's time ----------------------------------------------------

-- autosummarize: each block range is summarized as soon as the next one starts, so a scan of
-- the last seconds does not also read every page written since the last vacuum.
DROP INDEX followq.attempts_by_time;
CREATE INDEX attempts_by_time ON followq.attempts USING brin (sent_at)
    WITH (autosummarize = on);
CREATE INDEX attempts_by_answer_by ON followq.attempts USING brin (answer_by)
    WITH (autosummarize = on);

-- A ledger row grows when its answer is recorded (status, outcome, the headers, the times): at
-- fillfactor 80 a quarter of those updates found no room on their page and had to write
-- every index again. Half the page kept free keeps nearly all of them HOT.
ALTER TABLE followq.attempts SET (fillfactor = 50);
