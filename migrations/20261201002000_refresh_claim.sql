-- The single-flight refresh of an account's OAuth 2.0 tokens: a committed claim on the
-- account's credentials row, taken and released with one short compare-and-set statement
-- each. It replaces a session advisory lock, which any role (an enqueuing service too) could
-- take and hold to stall the daemon's refreshes. Roles that cannot UPDATE this table cannot
-- touch the claim.
ALTER TABLE followq.account_credentials
    ADD COLUMN refresh_claimed_by    text,
    ADD COLUMN refresh_claimed_until timestamptz,
    ADD CONSTRAINT account_credentials_refresh_claim_needs_holder_and_expiry
        CHECK ((refresh_claimed_by IS NULL) = (refresh_claimed_until IS NULL));

COMMENT ON COLUMN followq.account_credentials.refresh_claimed_by IS
    'The refresher (process and attempt) that alone may refresh this account''s tokens until refresh_claimed_until; a claim past that time is free.';
