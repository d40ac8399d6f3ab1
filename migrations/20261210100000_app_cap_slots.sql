-- The requests the per-app daily cap (rate_limit.daily_follows_per_app) let through lately,
-- one row each, so that the check before a request reads one small table of the coordinator
-- instead of the ledger of every account.
--
-- The app's follows are the ledger's (what X may have done). But the ledger's last seconds
-- are on every shard on Citus, and reading them before each request made requests miss their
-- send deadline there. So the check adds two figures: the ledger's settled follows (rows sent
-- long enough ago that their fate is final), read every poll by each daemon's app monitor,
-- and the slots taken since, here. A daemon takes a slot, under this table's lock, only while
-- the sum stays below the cap: replicas never pass the cap together. A slot whose request
-- proved to follow nobody (a 4xx, never sent) is deleted once its outcome is written; the
-- rest are deleted an hour on, long after the ledger's settled rows count their requests.
--
-- The app monitor's count, which writes the app-wide stop, reads the ledger's fresh rows too:
-- there an unanswered row counts only if its request took a slot (it may have left), not
-- while it is only claimed (it may never be sent, and then takes no place under the cap).
--
-- On Citus this is a plain table of the coordinator, where every daemon connects: it is never
-- joined with the account tables, and a slot is one short write on one node.

CREATE TABLE followq.app_cap_slots (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    -- The request's ledger row (followq.attempts.id), written at its claim.
    attempt_id  bigint      NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT app_cap_slots_pkey PRIMARY KEY (id)
);

-- The check counts the slots taken after an instant; the prune deletes those before one.
CREATE INDEX app_cap_slots_by_taken_at ON followq.app_cap_slots (taken_at);

COMMENT ON TABLE followq.app_cap_slots IS
    'Requests let through by rate_limit.daily_follows_per_app, one row each, taken under this table''s lock: the cap''s check adds them to the ledger''s settled follows. Deleted when the request proved to follow nobody, or an hour on.';
