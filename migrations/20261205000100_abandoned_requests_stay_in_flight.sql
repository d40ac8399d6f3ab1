-- A request stays in flight until its answer_by, whoever marked its ledger row. A peer that
-- finds a daemon gone (its liveness session ended) marks the daemon's unanswered rows
-- 'abandoned' for operators, but a daemon whose session ended may still be alive with its
-- request in the air (its connection to Postgres broke, not the process). Until answer_by the
-- request may still reach X: the job is in flight, and no claim may pick it again.
CREATE OR REPLACE VIEW followq.jobs_in_flight AS
SELECT t.job_id, t.account_user_id AS source_user_id, t.worker_id, t.sent_at, t.answer_by,
       t.id AS attempt_id
FROM followq.attempts AS t
WHERE (t.outcome IS NULL OR t.outcome = 'abandoned') AND t.answer_by > now()
UNION ALL
SELECT j.id, j.source_user_id, j.leased_by, j.updated_at, j.lease_expires_at, NULL
FROM followq.follow_jobs AS j
WHERE j.state = 'running';
