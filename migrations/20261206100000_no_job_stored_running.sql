-- A job whose request is in the air stays `queued`: the ledger row its claim wrote (with
-- answer_by) says so, and followq.jobs_in_flight lists it. No release of followq that stored a
-- job `running` (with a job lease) was ever published; what remains of that model goes:
-- any row still `running` goes back to the queue, the state is refused from now on, and the
-- job lease's columns, constraint and index are dropped. (The partial unique index and
-- followq.enqueue keep their `state IN ('queued', 'running')` predicate: services name it in
-- their ON CONFLICT clause, and it means the same once no row can be `running`.)

UPDATE followq.follow_jobs
SET state = 'queued', run_at = now(), updated_at = now()
WHERE state = 'running';

CREATE OR REPLACE VIEW followq.jobs_in_flight AS
SELECT t.job_id, t.account_user_id AS source_user_id, t.worker_id, t.sent_at, t.answer_by,
       t.id AS attempt_id
FROM followq.attempts AS t
WHERE (t.outcome IS NULL OR t.outcome = 'abandoned') AND t.answer_by > now();

COMMENT ON VIEW followq.jobs_in_flight IS
    'Jobs whose request may be on its way to X right now (a ledger row with no final answer whose answer_by has not passed), with the daemon that sent it. Such a job stays queued in follow_jobs until its outcome is recorded.';

DROP INDEX IF EXISTS followq.follow_jobs_running_by_lease;

ALTER TABLE followq.follow_jobs
    DROP CONSTRAINT IF EXISTS follow_jobs_running_needs_a_lease,
    DROP CONSTRAINT follow_jobs_state_must_be_a_known_state,
    ADD CONSTRAINT follow_jobs_state_must_be_a_known_state
        CHECK (state IN ('queued', 'succeeded', 'failed', 'cancelled')),
    DROP COLUMN leased_by,
    DROP COLUMN lease_expires_at;
