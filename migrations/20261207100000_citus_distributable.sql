-- A schema Citus can distribute by the account, and the same on one Postgres.
--
-- Citus places the rows of colocated tables by the hash of their distribution columns, and it
-- colocates only columns of one type: follow_jobs.source_user_id was the domain
-- followq.follow_source_user_id, while accounts.user_id, account_credentials.user_id and
-- attempts.account_user_id are text. So the account id is text everywhere:
--
-- 1. follow_jobs.source_user_id becomes text. The domain's two rules become table constraints
--    of the same names, so an inserting service still gets the name of the rule it broke. (A
--    table CHECK is evaluated on every UPDATE of the row, a domain's only where a value is
--    written: two regular-expression tests per job update more, on a column that never
--    changes. target_user_id is no account id of ours and keeps its domain.)
--
-- 2. followq.enqueue sends the wake-up itself. On a distributed table a trigger runs on the
--    node that holds the row's shard, where its NOTIFY reaches only sessions on that node and
--    makes a statement spanning nodes fail to commit, so followq.distribute() drops the
--    notifying triggers; a function called on the coordinator notifies where the daemons
--    listen. On one Postgres the triggers stay, for plain INSERTs (Postgres folds the two
--    identical notifications of one transaction into one).
--
-- 3. followq.distribute(): distributes the tables on a Citus coordinator (README, "Scaling
--    past one Postgres", says which table goes where and why). `followq migrate` calls it when
--    the citus extension is installed; on an already-filled single-node schema an operator
--    runs `SELECT followq.distribute();` once. It does nothing to a table already distributed.

-- 1. One type for the account id ---------------------------------------------------------

-- Text to the domain's base type needs no rewrite; the domain's checks go with the domain.
ALTER TABLE followq.follow_jobs
    ALTER COLUMN source_user_id TYPE text;

ALTER TABLE followq.follow_jobs
    ADD CONSTRAINT follow_jobs_source_user_id_must_be_1_to_19_digits
        CHECK (source_user_id ~ '^[0-9]{1,19}$');

-- As in the input-bounds migration: every new or changed row obeys it; it is validated against
-- the whole table only when no old finished row breaks it.
ALTER TABLE followq.follow_jobs
    ADD CONSTRAINT follow_jobs_source_user_id_must_not_start_with_0
        CHECK (source_user_id ~ '^[1-9]') NOT VALID;

DO $$
BEGIN
    ALTER TABLE followq.follow_jobs
        VALIDATE CONSTRAINT follow_jobs_source_user_id_must_not_start_with_0;
EXCEPTION WHEN check_violation THEN
    RAISE NOTICE 'followq: follow_jobs_source_user_id_must_not_start_with_0 holds older rows that break it; new and changed rows obey it';
END
$$;

DROP DOMAIN followq.follow_source_user_id;

-- 2. followq.enqueue notifies --------------------------------------------------------------

CREATE OR REPLACE FUNCTION followq.enqueue(
    source_user_id text,
    target_user_id text,
    priority       integer     DEFAULT 0,
    run_at         timestamptz DEFAULT now(),
    max_attempts   integer     DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    job_id bigint;
BEGIN
    LOOP
        INSERT INTO followq.follow_jobs AS j
            (source_user_id, target_user_id, priority, run_at, max_attempts)
        VALUES
            (enqueue.source_user_id, enqueue.target_user_id, enqueue.priority,
             enqueue.run_at, enqueue.max_attempts)
        ON CONFLICT (source_user_id, target_user_id) WHERE state IN ('queued', 'running')
        DO NOTHING
        RETURNING j.id INTO job_id;
        IF job_id IS NOT NULL THEN
            -- Here, where the caller's session is: on Citus the trigger's NOTIFY is sent on
            -- the worker node that holds the job's shard.
            PERFORM pg_notify('followq_job_enqueued', enqueue.source_user_id);
            RETURN job_id;
        END IF;

        SELECT j.id INTO job_id
        FROM followq.follow_jobs AS j
        WHERE j.source_user_id = enqueue.source_user_id
          AND j.target_user_id = enqueue.target_user_id
          AND j.state IN ('queued', 'running');
        IF job_id IS NOT NULL THEN
            RETURN job_id;
        END IF;
        -- The conflicting job finished between the two statements: try again.
    END LOOP;
END;
$$;

-- 3. followq.distribute() ------------------------------------------------------------------

CREATE FUNCTION followq.distribute() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    item text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'followq.distribute() needs the citus extension in this database (CREATE EXTENSION citus, on the coordinator and every worker)';
    END IF;
    -- The Citus objects are named in EXECUTE, so that this function is created, and parsed,
    -- on a Postgres without Citus as well.
    --
    -- By the account, colocated: every row of one account on one shard, so that the keys and
    -- foreign keys holding the account are enforced there and a statement naming one account
    -- reaches one node. accounts is referenced by the others' foreign keys: the foreign keys
    -- are dropped while the tables are distributed one by one, and added again after.
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                   WHERE logicalrelid = 'followq.accounts'::regclass) THEN
        -- A trigger on a distributed table runs on the worker node that holds the row's
        -- shard: its NOTIFY would reach only sessions there, and a worker refuses to commit a
        -- statement that spans nodes (two-phase commit) once it has sent a NOTIFY. The wake-up
        -- comes from followq.enqueue on the coordinator instead; followq_job_finished is not
        -- sent on Citus (README says what a waiting service reads).
        DROP TRIGGER IF EXISTS follow_jobs_notify_enqueued ON followq.follow_jobs;
        DROP TRIGGER IF EXISTS follow_jobs_notify_finished ON followq.follow_jobs;
        ALTER TABLE followq.account_credentials
            DROP CONSTRAINT account_credentials_account_must_exist;
        ALTER TABLE followq.follow_jobs
            DROP CONSTRAINT follow_jobs_source_must_be_a_registered_account;
        EXECUTE $sql$SELECT create_distributed_table('followq.accounts', 'user_id')$sql$;
        EXECUTE $sql$SELECT create_distributed_table('followq.account_credentials', 'user_id',
                                                     colocate_with => 'followq.accounts')$sql$;
        EXECUTE $sql$SELECT create_distributed_table('followq.follow_jobs', 'source_user_id',
                                                     colocate_with => 'followq.accounts')$sql$;
        ALTER TABLE followq.account_credentials
            ADD CONSTRAINT account_credentials_account_must_exist
                FOREIGN KEY (user_id) REFERENCES followq.accounts (user_id) ON DELETE CASCADE;
        ALTER TABLE followq.follow_jobs
            ADD CONSTRAINT follow_jobs_source_must_be_a_registered_account
                FOREIGN KEY (source_user_id) REFERENCES followq.accounts (user_id);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                   WHERE logicalrelid = 'followq.attempts'::regclass) THEN
        EXECUTE $sql$SELECT create_distributed_table('followq.attempts', 'account_user_id',
                                                     colocate_with => 'followq.accounts')$sql$;
    END IF;
    -- Small tables read beside the account tables, written seldom: a copy on every node.
    FOREACH item IN ARRAY ARRAY['followq.app_pause', 'followq.budget_periods',
                                'followq.spend_by_hour'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = item::regclass) THEN
            EXECUTE format('SELECT create_reference_table(%L)', item);
        END IF;
    END LOOP;
    -- The registry stays on the coordinator, where the daemons' liveness sessions are (peers
    -- look for them in its pg_stat_activity), as a Citus local table: Citus joins it with the
    -- distributed tables (followq status lists the daemons with their accounts), which it
    -- does not with a table it does not know. followq._sqlx_migrations stays a plain table.
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                   WHERE logicalrelid = 'followq.daemons'::regclass) THEN
        EXECUTE $sql$SELECT citus_add_local_table_to_metadata('followq.daemons')$sql$;
    END IF;
END;
$$;

REVOKE EXECUTE ON FUNCTION followq.distribute() FROM PUBLIC;

COMMENT ON FUNCTION followq.distribute() IS
    'On a Citus coordinator: distributes accounts, account_credentials, follow_jobs and attempts by the account id, colocated, makes app_pause, budget_periods and spend_by_hour reference tables and daemons a Citus local table. Tables already distributed are left as they are. See README, "Scaling past one Postgres".';
