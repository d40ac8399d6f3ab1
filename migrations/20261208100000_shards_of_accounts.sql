-- Which shard holds each account's rows. On Citus a statement that locks rows (a lease, a
-- claim, a record) runs only when it is routed to one shard, so the daemon sends one
-- statement per shard, grouping its accounts by what this returns; on one Postgres every
-- account is in shard 0 (the daemon does not ask there).
--
-- PL/pgSQL, so that the function is created where Citus is not installed: the Citus function
-- is looked up only when that branch runs.
CREATE FUNCTION followq.shards_of(accounts text[]) RETURNS TABLE (account text, shard bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF followq.routed_by_account() THEN
        RETURN QUERY
            SELECT a.account, get_shard_id_for_distribution_column('followq.accounts', a.account)
            FROM unnest(accounts) AS a(account);
    ELSE
        RETURN QUERY SELECT a.account, 0::bigint FROM unnest(accounts) AS a(account);
    END IF;
END;
$$;

COMMENT ON FUNCTION followq.shards_of(text[]) IS
    'The shard that holds each account''s rows on Citus (0 everywhere on one Postgres): the daemon sends one statement per shard.';

-- As every function of the schema: callable by the roles deploy/roles.sql grants it to only.
REVOKE EXECUTE ON FUNCTION followq.shards_of(text[]) FROM PUBLIC;
