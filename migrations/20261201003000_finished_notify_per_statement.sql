-- NOTIFY followq_job_finished once per statement instead of once per row.
--
-- The daemon records outcomes in batches of up to a few hundred jobs per statement; a row
-- trigger ran a plpgsql function and a pg_notify for every one of them. A statement trigger
-- with a transition table runs once per statement and sends one notification per chunk of up
-- to 50 finished jobs (a payload stays well under NOTIFY's 8000 bytes):
--
--   {"jobs": [{"id": …, "state": …, "source_user_id": …, "target_user_id": …}, …]}
--
-- in id order. The listener contract changes from one object per job to this array.

DROP TRIGGER follow_jobs_notify_finished ON followq.follow_jobs;
DROP FUNCTION followq.notify_job_finished();

CREATE FUNCTION followq.notify_jobs_finished() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT json_build_object('jobs', json_agg(json_build_object(
                   'id', f.id,
                   'state', f.state,
                   'source_user_id', f.source_user_id,
                   'target_user_id', f.target_user_id) ORDER BY f.id))::text
        FROM (
            SELECT n.id, n.state, n.source_user_id, n.target_user_id,
                   (row_number() OVER (ORDER BY n.id) - 1) / 50 AS chunk
            FROM finished_new AS n
            JOIN finished_old AS o ON o.id = n.id
            WHERE n.state IN ('succeeded', 'failed', 'cancelled')
              AND o.state IS DISTINCT FROM n.state
        ) AS f
        GROUP BY f.chunk
        ORDER BY f.chunk
    LOOP
        PERFORM pg_notify('followq_job_finished', payload);
    END LOOP;
    RETURN NULL;
END;
$$;

REVOKE EXECUTE ON FUNCTION followq.notify_jobs_finished() FROM PUBLIC;

CREATE TRIGGER follow_jobs_notify_finished
    AFTER UPDATE ON followq.follow_jobs
    REFERENCING OLD TABLE AS finished_old NEW TABLE AS finished_new
    FOR EACH STATEMENT
    EXECUTE FUNCTION followq.notify_jobs_finished();

COMMENT ON FUNCTION followq.notify_jobs_finished() IS
    'NOTIFY followq_job_finished, {"jobs":[{"id","state","source_user_id","target_user_id"},…]} per chunk of 50 jobs that reached succeeded, failed or cancelled in one statement.';
