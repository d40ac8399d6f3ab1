-- An app-wide stop that X lifts without telling (402: the app's prepaid credits ran out, and
-- someone tops them up) is probed: one request, by one daemon, every billing.probe_interval.
-- The next probe's time is kept with the stop, so that replicas take turns rather than each
-- sending a probe of its own: a daemon claims the probe by moving probe_at forward.
ALTER TABLE followq.app_pause
    ADD COLUMN probe_at timestamptz;

COMMENT ON COLUMN followq.app_pause.probe_at IS
    'When one request may next probe whether the stop''s cause is gone (credits_depleted); NULL: no probing.';
