-- The queued jobs in run_at order, for "the ready job that has waited longest" (`followq
-- status` and the status page): without it that question sorted every
-- queued job (about 55 ms for 50,000 of them; 3 ms with it). It costs one index entry when a
-- job is enqueued or put back in the queue; finishing a job adds none (the finished row is
-- outside the index's predicate).
CREATE INDEX follow_jobs_queued_by_run_at
    ON followq.follow_jobs (run_at, id)
    WHERE state = 'queued';
