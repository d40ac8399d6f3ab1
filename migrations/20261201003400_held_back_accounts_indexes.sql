-- The accounts that are held back, each kind in the order `followq status` and the status
-- page list them: paused ones by when they resume, needs_reauth and disabled ones by how long
-- they have been so. Without them each list read every account (about 10 ms each for
-- 100,000; under 1 ms with them, for the first 50). Only a change of status, pause or
-- registration touches these columns: lease renewals, the frequent writes to accounts, stay
-- HOT updates. (The second is not partial: the status is a parameter of its statement, and a
-- generic plan could not prove a partial index's predicate from it.)
CREATE INDEX accounts_paused_by_resume
    ON followq.accounts (paused_until, user_id)
    WHERE status = 'paused';

CREATE INDEX accounts_by_status_and_age
    ON followq.accounts (status, updated_at, user_id);
