-- What a handover between daemons needs to be safe by construction.

-- The latest moment the request of a ledger row can reach X: its claim time plus the
-- daemon's send deadline plus the request timeout. A daemon that did not put the request on
-- the wire by its deadline never sends it (the row says 'not_sent'), so a row without an
-- answer may still land until answer_by, and a successor counts it until then. NULL on rows
-- written by daemons older than this column (a successor then assumes its own bounds).
ALTER TABLE followq.attempts
    ADD COLUMN answer_by timestamptz;

COMMENT ON COLUMN followq.attempts.answer_by IS
    'The request may reach X until this instant (claim + send deadline + request timeout). Unanswered rows count against the account''s window until then.';

-- Each daemon holds a Postgres session of its own for as long as it lives; its pid and start
-- time are recorded here, so a peer can tell within a second that the daemon is gone (its
-- session ended) instead of waiting for its leases to run out.
ALTER TABLE followq.daemons
    ADD COLUMN session_pid        integer,
    ADD COLUMN session_started_at timestamptz;

COMMENT ON COLUMN followq.daemons.session_pid IS
    'pg_backend_pid() of the daemon''s liveness session: when no such session exists any more, the daemon is gone and its accounts and running jobs are taken over at once.';
