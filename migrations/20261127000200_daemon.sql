-- What the daemon needs beyond the enqueue contract: account leases (so that one daemon at a
-- time sends for an account, whatever the number of replicas), the app-wide stop, and the
-- NOTIFY on terminal states for inserting services.

-- Account leases: the holder's rate limiter is the only one for that account.
ALTER TABLE followq.accounts
    ADD COLUMN leased_by        text,
    ADD COLUMN lease_expires_at timestamptz,
    ADD CONSTRAINT accounts_lease_needs_holder_and_expiry
        CHECK ((leased_by IS NULL) = (lease_expires_at IS NULL));

COMMENT ON COLUMN followq.accounts.leased_by IS
    'The daemon instance that alone may send for this account until lease_expires_at.';

-- The app-wide stop: one row while every account must stop sending (403 client-forbidden,
-- unsupported-authentication, a product usage cap, the app's daily cap). paused_until NULL
-- means until an operator deletes the row.
CREATE TABLE followq.app_pause (
    scope        text        NOT NULL DEFAULT 'app',
    reason       text        NOT NULL,
    detail       jsonb,
    paused_until timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT app_pause_pkey PRIMARY KEY (scope),
    CONSTRAINT app_pause_scope_must_be_app CHECK (scope = 'app')
);

COMMENT ON TABLE followq.app_pause IS
    'While a row is here (and paused_until is NULL or in the future) no daemon sends any request. DELETE it to resume.';

-- NOTIFY followq_job_finished, payload {"id":…,"state":…,"source_user_id":…,"target_user_id":…}
-- whenever a job reaches succeeded, failed or cancelled.
CREATE FUNCTION followq.notify_job_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('followq_job_finished', json_build_object(
        'id', NEW.id,
        'state', NEW.state,
        'source_user_id', NEW.source_user_id,
        'target_user_id', NEW.target_user_id)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER follow_jobs_notify_finished
    AFTER UPDATE OF state ON followq.follow_jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION followq.notify_job_finished();

-- Live daemons: each registers at start, heartbeats with its leases, and leaves on a clean
-- stop. Replicas use it to share accounts fairly; operators to see who runs.
CREATE TABLE followq.daemons (
    worker_id    text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT daemons_pkey PRIMARY KEY (worker_id)
);

COMMENT ON TABLE followq.daemons IS
    'One row per running daemon (worker_id as in leases and the ledger). A row whose heartbeat is older than the account lease belongs to a daemon that died.';
