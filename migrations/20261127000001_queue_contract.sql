-- followq's public contract: the tables other services write to and read from.
--
-- Everything lives in schema `followq`. Other services INSERT into
-- `followq.follow_jobs` (or call `followq.enqueue`) and may read outcomes; the
-- daemon owns every other column. Constraint names are written for the
-- inserting service: the name alone says what it did wrong.

CREATE SCHEMA IF NOT EXISTS followq;

-- ---------------------------------------------------------------------------
-- Accounts: one row per authenticated X user whose follows followq sends.
-- ---------------------------------------------------------------------------
CREATE TABLE followq.accounts (
    user_id              text        NOT NULL,
    -- Which credentials the daemon signs requests with.
    auth_kind            text        NOT NULL,
    -- active: jobs flow. paused: until paused_until (429 reset, daily cap,
    -- usage cap, operator). needs_reauth: tokens rejected, a person must store
    -- new ones; jobs stay queued. disabled: an operator stopped it; jobs stay
    -- queued and are never sent until it is resumed.
    status               text        NOT NULL DEFAULT 'active',
    paused_until         timestamptz,
    pause_reason         text,
    -- Optional per-account quota override (X's tiers differ: 50, 5 or 1 per
    -- 15 minutes). NULL means the daemon's configured quota.
    quota_requests       integer,
    quota_period_seconds integer,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT accounts_pkey PRIMARY KEY (user_id),
    CONSTRAINT accounts_user_id_must_be_1_to_19_digits
        CHECK (user_id ~ '^[0-9]{1,19}$'),
    CONSTRAINT accounts_auth_kind_must_be_oauth2_or_oauth1
        CHECK (auth_kind IN ('oauth2', 'oauth1')),
    CONSTRAINT accounts_status_must_be_active_paused_needs_reauth_or_disabled
        CHECK (status IN ('active', 'paused', 'needs_reauth', 'disabled')),
    CONSTRAINT accounts_paused_needs_paused_until_and_reason
        CHECK (status <> 'paused' OR (paused_until IS NOT NULL AND pause_reason IS NOT NULL)),
    CONSTRAINT accounts_quota_override_needs_both_positive_values
        CHECK ((quota_requests IS NULL AND quota_period_seconds IS NULL)
            OR (quota_requests > 0 AND quota_period_seconds > 0))
);

COMMENT ON TABLE followq.accounts IS
    'One row per authenticated X user. Credentials live in followq.account_credentials so that a role which only enqueues never sees them.';

-- Secrets in their own table: GRANT the enqueueing role nothing here.
CREATE TABLE followq.account_credentials (
    user_id              text        NOT NULL,
    -- OAuth 2.0 user context (Authorization Code with PKCE).
    oauth2_access_token  text,
    oauth2_refresh_token text,
    oauth2_expires_at    timestamptz,
    -- OAuth 1.0a user context (does not expire).
    oauth1_token         text,
    oauth1_token_secret  text,
    updated_at           timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT account_credentials_pkey PRIMARY KEY (user_id),
    CONSTRAINT account_credentials_account_must_exist
        FOREIGN KEY (user_id) REFERENCES followq.accounts (user_id) ON DELETE CASCADE,
    CONSTRAINT account_credentials_need_oauth2_access_token_or_oauth1_pair
        CHECK (oauth2_access_token IS NOT NULL
            OR (oauth1_token IS NOT NULL AND oauth1_token_secret IS NOT NULL))
);

COMMENT ON TABLE followq.account_credentials IS
    'Secrets. Readable by the daemon role only. Tokens are never copied into any other table or log.';

-- ---------------------------------------------------------------------------
-- Follow jobs: one row per request "source_user_id follows target_user_id".
-- ---------------------------------------------------------------------------
CREATE TABLE followq.follow_jobs (
    id                 bigint      GENERATED ALWAYS AS IDENTITY,
    source_user_id     text        NOT NULL,
    target_user_id     text        NOT NULL,
    -- queued -> running -> succeeded | failed; queued -> cancelled.
    state              text        NOT NULL DEFAULT 'queued',
    -- Larger runs first within one account.
    priority           integer     NOT NULL DEFAULT 0,
    -- Not sent before this instant (enqueue delay, retry backoff, 429 reset).
    run_at             timestamptz NOT NULL DEFAULT now(),
    -- Requests that counted as an attempt (429 snoozes do not).
    attempts           integer     NOT NULL DEFAULT 0,
    -- NULL: the daemon's configured retry.max_attempts.
    max_attempts       integer,
    -- 429 window snoozes: not failures.
    rate_limited_count integer     NOT NULL DEFAULT 0,
    -- The outcome, set when succeeded.
    following          boolean,
    pending_follow     boolean,
    -- {"status": 403, "problem_type": "...", "detail": "...", ...}; never a token.
    last_error         jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    -- While running: which daemon holds the job and until when; past this a
    -- rescuer puts the job back to queued.
    leased_by          text,
    lease_expires_at   timestamptz,

    CONSTRAINT follow_jobs_pkey PRIMARY KEY (id),
    CONSTRAINT follow_jobs_source_user_id_must_be_1_to_19_digits
        CHECK (source_user_id ~ '^[0-9]{1,19}$'),
    CONSTRAINT follow_jobs_target_user_id_must_be_1_to_19_digits
        CHECK (target_user_id ~ '^[0-9]{1,19}$'),
    CONSTRAINT follow_jobs_source_cannot_follow_itself
        CHECK (source_user_id <> target_user_id),
    CONSTRAINT follow_jobs_source_must_be_a_registered_account
        FOREIGN KEY (source_user_id) REFERENCES followq.accounts (user_id),
    CONSTRAINT follow_jobs_state_must_be_a_known_state
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT follow_jobs_attempts_must_not_be_negative
        CHECK (attempts >= 0 AND rate_limited_count >= 0),
    CONSTRAINT follow_jobs_max_attempts_must_be_positive
        CHECK (max_attempts IS NULL OR max_attempts > 0),
    CONSTRAINT follow_jobs_finished_at_set_exactly_when_finished
        CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT follow_jobs_running_needs_a_lease
        CHECK (state <> 'running' OR (leased_by IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT follow_jobs_succeeded_needs_outcome
        CHECK (state <> 'succeeded' OR (following IS NOT NULL AND pending_follow IS NOT NULL))
);

COMMENT ON TABLE followq.follow_jobs IS
    'The queue. Insert (source_user_id, target_user_id[, priority, run_at, max_attempts]); everything else belongs to the daemon. See README.md, "The SQL contract".';

-- At most one active job per (source, target): a repeated request collapses
-- onto the existing one. Finished jobs do not count, so a pair can be
-- followed again after an unfollow.
CREATE UNIQUE INDEX follow_jobs_one_active_job_per_source_and_target
    ON followq.follow_jobs (source_user_id, target_user_id)
    WHERE state IN ('queued', 'running');

-- "Next ready job of account S": a descent to (S, highest priority) then a
-- walk in run_at order. Partial, so finished rows never bloat it.
CREATE INDEX follow_jobs_queued_by_account
    ON followq.follow_jobs (source_user_id, priority DESC, run_at, id)
    WHERE state = 'queued';

-- The rescuer: running jobs whose lease ran out.
CREATE INDEX follow_jobs_running_by_lease
    ON followq.follow_jobs (lease_expires_at)
    WHERE state = 'running';

-- Retention and "finished recently" reports.
CREATE INDEX follow_jobs_finished_at
    ON followq.follow_jobs (finished_at)
    WHERE finished_at IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Attempts: the ledger, one row per HTTP request sent to X.
-- ---------------------------------------------------------------------------
-- A row is written when the request is about to go out (so a crash after
-- sending still counts against the account's window) and its response
-- columns are filled in once, when the answer arrives. Rows are never
-- deleted except by retention.
CREATE TABLE followq.attempts (
    id                    bigint      GENERATED ALWAYS AS IDENTITY,
    -- No foreign key: retention prunes jobs and the ledger separately, and the
    -- ledger must outlive a job to count the account's window.
    job_id                bigint      NOT NULL,
    account_user_id       text        NOT NULL,
    -- The daemon instance that sent it.
    worker_id             text        NOT NULL,
    sent_at               timestamptz NOT NULL DEFAULT now(),
    -- NULL until the answer (or the failure to get one) is recorded.
    completed_at          timestamptz,
    latency_ms            integer,
    -- HTTP status; NULL when no response came (timeout, connection reset).
    http_status           smallint,
    -- The client's classification: succeeded, rate_limited, usage_capped,
    -- unauthorized, app_forbidden, daily_cap, permanent, transient; or
    -- 'abandoned' when a rescuer found it without an answer.
    outcome               text,
    rate_limit_limit      integer,
    rate_limit_remaining  integer,
    rate_limit_reset_at   timestamptz,
    error                 jsonb,

    CONSTRAINT attempts_pkey PRIMARY KEY (id)
);

COMMENT ON TABLE followq.attempts IS
    'Append-only ledger of HTTP requests: the audit trail and the source of truth for how many requests an account made in its current window.';

-- "Requests by account S since T" (window seeding, daily caps).
CREATE INDEX attempts_by_account_and_time
    ON followq.attempts (account_user_id, sent_at);

CREATE INDEX attempts_by_job
    ON followq.attempts (job_id);

-- Retention and throughput reports.
CREATE INDEX attempts_by_time
    ON followq.attempts (sent_at);

-- ---------------------------------------------------------------------------
-- Wake-ups: NOTIFY followq_job_enqueued, payload = source_user_id.
-- ---------------------------------------------------------------------------
-- Postgres folds identical notifications within one transaction, so a batch
-- insert wakes each account once.
CREATE FUNCTION followq.notify_job_enqueued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('followq_job_enqueued', NEW.source_user_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER follow_jobs_notify_enqueued
    AFTER INSERT ON followq.follow_jobs
    FOR EACH ROW
    WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION followq.notify_job_enqueued();

-- ---------------------------------------------------------------------------
-- followq.enqueue(source, target, priority, run_at, max_attempts) -> job id
-- ---------------------------------------------------------------------------
-- Returns the id of the new job, or of the active job that already asks for
-- the same (source, target). Raises the same constraint errors as the INSERT.
CREATE FUNCTION followq.enqueue(
    source_user_id text,
    target_user_id text,
    priority       integer     DEFAULT 0,
    run_at         timestamptz DEFAULT now(),
    max_attempts   integer     DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql AS $$
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

COMMENT ON FUNCTION followq.enqueue(text, text, integer, timestamptz, integer) IS
    'Enqueue "source follows target". Returns the new job id, or the id of the active job for the same pair.';
