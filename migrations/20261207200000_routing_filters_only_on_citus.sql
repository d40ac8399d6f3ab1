-- The claim and the record filter every table by the accounts they name (`= ANY(accounts)`)
-- so that Citus routes a batch of one shard's accounts to that shard. On one Postgres those
-- filters are redundant, and not free: a 256-element array compared with every row cost 0.03
-- ms of Postgres CPU per job (15 % of the throughput). So each filter is written
-- `(NOT followq.routed_by_account() OR column = ANY(accounts))`: the function is IMMUTABLE
-- and takes no argument, so the planner evaluates it once, when it plans the statement, and
-- on one Postgres the whole filter folds to true and disappears.
--
-- Installing Citus later needs the daemons restarted (their prepared statements were planned
-- without it), as `followq migrate` on the coordinator does anyway.
CREATE FUNCTION followq.routed_by_account() RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') $$;

COMMENT ON FUNCTION followq.routed_by_account() IS
    'True where the citus extension is installed: the claim and the record then filter every table by their accounts, for Citus to route them to one shard. Evaluated when a statement is planned.';

-- As every function of the schema: callable by the roles deploy/roles.sql grants it to only.
REVOKE EXECUTE ON FUNCTION followq.routed_by_account() FROM PUBLIC;
