-- followq_job_finished, written once, sent on Citus too.
--
-- On one Postgres the statement trigger of follow_jobs announces every job that reached
-- succeeded, failed or cancelled. On Citus there is no such trigger (followq.distribute()
-- drops it: on a distributed table it would run on the worker that holds the shard, whose
-- NOTIFY reaches only sessions there), so the daemon and the operator commands announce the
-- jobs they finish themselves, in a statement of their own on the coordinator, where the
-- inserting services listen. A statement that also writes a job cannot carry the NOTIFY
-- there: Citus sends a statement about one shard's accounts to that shard's worker whole,
-- functions and all.
--
-- followq.announce_finished() is the one place the payload is written, for the trigger and
-- for those statements alike: one NOTIFY per chunk of up to 50 jobs, in id order,
--
--   {"jobs": [{"id": …, "state": …, "source_user_id": …, "target_user_id": …}, …]}
--
-- (a payload stays well under NOTIFY's 8000 bytes).

CREATE FUNCTION followq.announce_finished(
    job_ids         bigint[],
    states          text[],
    source_user_ids text[],
    target_user_ids text[]
) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    payload text;
    sent integer := 0;
BEGIN
    FOR payload IN
        SELECT json_build_object('jobs', json_agg(json_build_object(
                   'id', f.id,
                   'state', f.state,
                   'source_user_id', f.source_user_id,
                   'target_user_id', f.target_user_id) ORDER BY f.id))::text
        FROM (
            SELECT t.id, t.state, t.source_user_id, t.target_user_id,
                   (row_number() OVER (ORDER BY t.id) - 1) / 50 AS chunk
            FROM unnest(job_ids, states, source_user_ids, target_user_ids)
                 AS t(id, state, source_user_id, target_user_id)
        ) AS f
        GROUP BY f.chunk
        ORDER BY f.chunk
    LOOP
        PERFORM pg_notify('followq_job_finished', payload);
        sent := sent + 1;
    END LOOP;
    RETURN sent;
END;
$$;

REVOKE EXECUTE ON FUNCTION followq.announce_finished(bigint[], text[], text[], text[]) FROM PUBLIC;

COMMENT ON FUNCTION followq.announce_finished(bigint[], text[], text[], text[]) IS
    'NOTIFY followq_job_finished, {"jobs":[{"id","state","source_user_id","target_user_id"},…]} per chunk of 50 of the jobs given (the n-th element of each array is the n-th job), in id order. Returns how many notifications it sent.';

-- The trigger hands the jobs that reached a finished state in the statement to the function.
-- It runs with the rights of the role whose statement fired it (the daemon's, an operator's):
-- deploy/roles.sql grants EXECUTE on the function to followq_daemon.
CREATE OR REPLACE FUNCTION followq.notify_jobs_finished() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM followq.announce_finished(array_agg(n.id), array_agg(n.state),
                                      array_agg(n.source_user_id), array_agg(n.target_user_id))
    FROM finished_new AS n
    JOIN finished_old AS o ON o.id = n.id
    WHERE n.state IN ('succeeded', 'failed', 'cancelled')
      AND o.state IS DISTINCT FROM n.state
    HAVING count(*) > 0;
    RETURN NULL;
END;
$$;
