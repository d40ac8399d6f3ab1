-- What followq spent at X (pay-per-use: every request X acts on is billed), kept apart from
-- the ledger it is read from:
--
-- spend_by_hour: the ledger's requests per settled UTC hour (one whose requests can no longer
--   change: every answer is in, or its request's answer_by is long past), billed (X answered
--   2xx) and possibly billed (X may have acted and gave no final answer: 5xx, no answer,
--   abandoned). A month's spend is then a sum of at most 744 rows plus the last hours of the
--   ledger, whatever the ledger's size, and it outlives the ledger's retention.
-- budget_periods: what the daemons have reserved of a budget's period (a UTC day, a calendar
--   month), in requests. A daemon reserves a block before it starts the requests in it, so no
--   replica can start a request the budget does not allow; what a daemon did not use goes back
--   when it stops.

CREATE TABLE followq.spend_by_hour (
    hour                      timestamptz NOT NULL,
    requests_billed           bigint      NOT NULL,
    requests_possibly_billed  bigint      NOT NULL,

    CONSTRAINT spend_by_hour_pkey PRIMARY KEY (hour),
    CONSTRAINT spend_by_hour_hour_must_start_an_hour
        CHECK (hour = date_trunc('hour', hour, 'UTC'))
);

COMMENT ON TABLE followq.spend_by_hour IS
    'Requests per settled UTC hour: billed (X answered 2xx) and possibly billed (no final answer, or 5xx). Written by the daemons from the ledger; read by followq status and the status page.';

CREATE TABLE followq.budget_periods (
    period     text        NOT NULL,
    starts_at  timestamptz NOT NULL,
    reserved   bigint      NOT NULL,

    CONSTRAINT budget_periods_pkey PRIMARY KEY (period, starts_at),
    CONSTRAINT budget_periods_period_must_be_day_or_month CHECK (period IN ('day', 'month')),
    CONSTRAINT budget_periods_reserved_must_not_be_negative CHECK (reserved >= 0)
);

COMMENT ON TABLE followq.budget_periods IS
    'Requests the daemons reserved of billing.daily_budget / monthly_budget per period (UTC day, calendar month): the spend of the period when the row was made, plus every block reserved since, less what daemons gave back.';
