-- The requests the per-app daily cap (rate_limit.daily_follows_per_app) let through lately,
-- so that the check before a request reads one small table of the coordinator instead of the
-- ledger of every account.
--
-- The app's follows are the ledger's (what X may have done). But the ledger's last seconds
-- are on every shard on Citus, and reading them before each request made requests miss their
-- send deadline there. So the check adds two figures: the ledger's settled follows (rows sent
-- long enough ago that their fate is final), read every poll by each daemon's app monitor,
-- and the slots taken since, here. A daemon takes a slot, under app_cap_slots' lock, only
-- while the sum stays below the cap: replicas never pass the cap together. A slot whose
-- request proved to follow nobody (a 4xx, never sent) goes back once its outcome is written;
-- the rest are deleted an hour on, long after the ledger's settled rows count their requests.
--
-- app_cap_slots: one row per slot, naming its request's ledger row. The app monitor's count,
--   which writes the app-wide stop, reads the ledger's fresh rows too: there an unanswered
--   row counts only if its request took a slot (it may have left), not while it is only
--   claimed (it may never be sent, and then takes no place under the cap).
-- app_cap_slots_per_second: the same slots counted per second they were taken, so that a
--   check sums the thirty-odd seconds since the settled rows' end, not one row per slot
--   (at thousands of requests a second, counting the rows cost a millisecond per request).
--
-- On Citus both are plain tables of the coordinator, where every daemon connects: never
-- joined with the account tables, a slot is one short transaction on one node.

CREATE TABLE followq.app_cap_slots (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    -- The request's ledger row (followq.attempts.id), written at its claim.
    attempt_id  bigint      NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT app_cap_slots_pkey PRIMARY KEY (id)
);

-- The prune deletes the slots taken before an instant; the monitor reads those taken after.
CREATE INDEX app_cap_slots_by_taken_at ON followq.app_cap_slots (taken_at);

COMMENT ON TABLE followq.app_cap_slots IS
    'Requests let through by rate_limit.daily_follows_per_app, one row each, taken under this table''s lock and counted in app_cap_slots_per_second. Deleted when the request proved to follow nobody, or an hour on.';

CREATE TABLE followq.app_cap_slots_per_second (
    second  timestamptz NOT NULL,
    taken   integer     NOT NULL,

    CONSTRAINT app_cap_slots_per_second_pkey PRIMARY KEY (second),
    CONSTRAINT app_cap_slots_per_second_second_must_start_a_second
        CHECK (second = date_trunc('second', second, 'UTC')),
    CONSTRAINT app_cap_slots_per_second_taken_must_not_be_negative CHECK (taken >= 0)
);

COMMENT ON TABLE followq.app_cap_slots_per_second IS
    'The slots of app_cap_slots counted per second of their taken_at, written with them: the cap''s check sums the seconds since the ledger''s settled rows end.';
