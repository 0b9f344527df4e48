-- Whether AUTH may be sent on a connection without TLS (security NONE, or STARTTLS
-- opportunistic when the relay offers no STARTTLS). Off by default: a session then stops
-- before AUTH with STARTTLS_UNAVAILABLE. Existing accounts that were set up to authenticate
-- with no TLS at all (security NONE) keep working: they get it on, visible in their settings,
-- for an admin to review; opportunistic ones get it off, so a stripped STARTTLS no longer
-- sends their credential in clear.
ALTER TABLE accounts ADD COLUMN allow_plaintext_auth BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE accounts SET allow_plaintext_auth = TRUE WHERE security = 'none' AND use_authentication;
