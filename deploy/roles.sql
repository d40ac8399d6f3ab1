-- followq's database roles. Run as the role that owns the followq schema (the one that runs
-- `followq migrate`), after `followq migrate`, in every database followq uses:
--
--     psql "$OWNER_DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/roles.sql
--
-- Safe to run again (after every upgrade, for instance): roles are created only when
-- missing, and GRANT/REVOKE are idempotent.
--
-- Four roles in all:
--   * the owner (not created here): owns the schema, runs `followq migrate`. Not for daemons
--     or services.
--   * followq_enqueuer: services that ask for follows. Enqueues (INSERT or followq.enqueue)
--     and reads jobs and accounts; never sees a token, and cannot hold anything the daemon
--     waits for (it cannot lock or update accounts or credentials rows).
--   * followq_daemon: `followq run`. Reads and writes the queue, the ledger, the leases and
--     the pauses, reads and refreshes tokens; changes no schema. Also what
--     `followq credentials status` and `rekey` need.
--   * followq_registrar: `followq accounts add`. Registers accounts and stores (sealed)
--     tokens; cannot read tokens back, nor touch the queue, nor change the schema.
--
-- All three are group roles without LOGIN; give each service its own login role in them, e.g.
--     CREATE ROLE billing_service LOGIN PASSWORD '…' IN ROLE followq_enqueuer;
--     CREATE ROLE followq_worker  LOGIN PASSWORD '…' IN ROLE followq_daemon;
--     CREATE ROLE onboarding      LOGIN PASSWORD '…' IN ROLE followq_registrar;

-- Roles are shared by every database of the cluster: create them once, whoever runs first
-- (two sessions creating the same role at once make one of them fail; ignore that too).
DO $$
BEGIN
    CREATE ROLE followq_enqueuer NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE followq_daemon NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    CREATE ROLE followq_registrar NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- No function of the schema is callable by every role: EXECUTE goes to the roles below only.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA followq FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- followq_enqueuer: the SQL contract of README.md, nothing more.
-- ---------------------------------------------------------------------------------------------
GRANT USAGE ON SCHEMA followq TO followq_enqueuer;

-- Only the columns a caller may set (README.md, "Enqueue with a plain INSERT"): the state and
-- outcome columns belong to the daemon. INSERT … ON CONFLICT DO NOTHING needs no more, and
-- RETURNING id needs SELECT.
REVOKE ALL ON followq.follow_jobs FROM followq_enqueuer;
GRANT INSERT (source_user_id, target_user_id, priority, run_at, max_attempts)
    ON followq.follow_jobs TO followq_enqueuer;
GRANT SELECT ON followq.follow_jobs TO followq_enqueuer;
-- The job id comes from the identity sequence.
GRANT USAGE ON SEQUENCE followq.follow_jobs_id_seq TO followq_enqueuer;
-- followq.enqueue runs with the caller's rights (SECURITY INVOKER): the grants above are what
-- it uses.
GRANT EXECUTE ON FUNCTION followq.enqueue(text, text, integer, timestamptz, integer)
    TO followq_enqueuer;
-- Which accounts exist and whether they are paused: no secrets in this table.
REVOKE ALL ON followq.accounts FROM followq_enqueuer;
GRANT SELECT ON followq.accounts TO followq_enqueuer;
-- The tokens: nothing, explicitly (a no-op unless someone granted it before).
REVOKE ALL ON followq.account_credentials FROM followq_enqueuer;

-- ---------------------------------------------------------------------------------------------
-- followq_daemon: everything `followq run` reads and writes.
-- ---------------------------------------------------------------------------------------------
GRANT USAGE ON SCHEMA followq TO followq_daemon;
-- Claims and outcomes (UPDATE), retention (DELETE); INSERT for tests and tools that enqueue
-- with the daemon's credentials.
GRANT SELECT, INSERT, UPDATE, DELETE ON followq.follow_jobs TO followq_daemon;
-- Leases, pauses, needs_reauth.
GRANT SELECT, UPDATE ON followq.accounts TO followq_daemon;
-- Reading tokens, storing refreshed ones.
GRANT SELECT, UPDATE ON followq.account_credentials TO followq_daemon;
-- The ledger: written before each request, completed after, pruned by retention.
GRANT SELECT, INSERT, UPDATE, DELETE ON followq.attempts TO followq_daemon;
-- The app-wide stop and the live-daemon registry.
GRANT SELECT, INSERT, UPDATE, DELETE ON followq.app_pause TO followq_daemon;
GRANT SELECT, INSERT, UPDATE, DELETE ON followq.daemons TO followq_daemon;
-- What was spent at X (hourly rollups of the ledger) and what budgets are reserved.
GRANT SELECT, INSERT, UPDATE, DELETE ON followq.spend_by_hour TO followq_daemon;
GRANT SELECT, INSERT, UPDATE, DELETE ON followq.budget_periods TO followq_daemon;
-- The per-app cap's slots and their count per second: taken under the first table's lock
-- (SHARE ROW EXCLUSIVE, which needs UPDATE or DELETE), given back and pruned.
GRANT SELECT, INSERT, DELETE ON followq.app_cap_slots TO followq_daemon;
GRANT SELECT, INSERT, UPDATE, DELETE ON followq.app_cap_slots_per_second TO followq_daemon;
-- Identity columns (job and attempt ids).
GRANT USAGE ON ALL SEQUENCES IN SCHEMA followq TO followq_daemon;
-- The daemon refuses to start on a schema older than itself: it reads the migrations table.
GRANT SELECT ON followq._sqlx_migrations TO followq_daemon;
GRANT EXECUTE ON FUNCTION followq.enqueue(text, text, integer, timestamptz, integer)
    TO followq_daemon;
-- Whether the claim and the record filter by account for Citus (evaluated when planned).
GRANT EXECUTE ON FUNCTION followq.routed_by_account() TO followq_daemon;
GRANT EXECUTE ON FUNCTION followq.shards_of(text[]) TO followq_daemon;
-- Announcing finished jobs (followq_job_finished): called by the trigger of the statements that
-- finish jobs, and on Citus by the daemon itself.
GRANT EXECUTE ON FUNCTION followq.announce_finished(bigint[], text[], text[], text[])
    TO followq_daemon;

-- ---------------------------------------------------------------------------------------------
-- followq_registrar: `followq accounts add`, nothing more.
-- ---------------------------------------------------------------------------------------------
GRANT USAGE ON SCHEMA followq TO followq_registrar;
-- Create the account or update it (auth kind, quota override, needs_reauth -> active); never
-- its lease. SELECT: the current status, and the upsert reads the existing row.
REVOKE ALL ON followq.accounts FROM followq_registrar;
GRANT SELECT ON followq.accounts TO followq_registrar;
GRANT INSERT (user_id, auth_kind, quota_requests, quota_period_seconds)
    ON followq.accounts TO followq_registrar;
GRANT UPDATE (auth_kind, quota_requests, quota_period_seconds, status, paused_until,
              pause_reason, updated_at)
    ON followq.accounts TO followq_registrar;
-- Store tokens; read back nothing but the key the upsert conflicts on and the time the upsert
-- sets updated_at to (EXCLUDED.updated_at).
REVOKE ALL ON followq.account_credentials FROM followq_registrar;
GRANT SELECT (user_id, updated_at) ON followq.account_credentials TO followq_registrar;
GRANT INSERT (user_id, oauth2_access_token, oauth2_refresh_token, oauth2_expires_at,
              oauth1_token, oauth1_token_secret)
    ON followq.account_credentials TO followq_registrar;
GRANT UPDATE (oauth2_access_token, oauth2_refresh_token, oauth2_expires_at, oauth1_token,
              oauth1_token_secret, updated_at)
    ON followq.account_credentials TO followq_registrar;
