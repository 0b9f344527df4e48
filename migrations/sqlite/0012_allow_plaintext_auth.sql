-- Whether AUTH may be sent on a connection without TLS (security NONE, or STARTTLS
-- opportunistic when the relay offers no STARTTLS). Off for every existing account: a session
-- then stops before AUTH with STARTTLS_UNAVAILABLE until an admin turns it on.
ALTER TABLE accounts ADD COLUMN allow_plaintext_auth BOOLEAN NOT NULL DEFAULT FALSE;
