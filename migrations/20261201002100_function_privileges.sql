-- followq's functions run only for the roles deploy/roles.sql grants them to, and none of
-- them resolves a name through the caller's search_path.
--
-- Postgres grants EXECUTE on every new function to PUBLIC: any role of the cluster that can
-- reach the schema could call followq.enqueue. The trigger functions are fired by their
-- triggers whatever the caller's privileges, so revoking EXECUTE does not change them.
REVOKE EXECUTE ON FUNCTION followq.enqueue(text, text, integer, timestamptz, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION followq.notify_job_enqueued() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION followq.notify_job_finished() FROM PUBLIC;

-- Functions the schema's owner creates here later start without PUBLIC's EXECUTE too.
ALTER DEFAULT PRIVILEGES IN SCHEMA followq REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- A pinned search_path: the bodies name every table with its schema, and with pg_temp last a
-- caller's temporary table or function can never stand in for a built-in one.
ALTER FUNCTION followq.enqueue(text, text, integer, timestamptz, integer)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION followq.notify_job_enqueued() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION followq.notify_job_finished() SET search_path = pg_catalog, pg_temp;
