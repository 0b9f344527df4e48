-- Certificate renewal without a gap (PostgreSQL). The certificate an agent renewed with stays
-- valid until the new one is first used (a connection authenticated with it) or until
-- `prev_cert_expire_time` (24 h after the renewal), whichever comes first: a renewal whose
-- response was lost leaves the agent able to connect with the certificate it still has.
-- Revocation is by agent (`revoked`), and covers both certificates.
ALTER TABLE agents ADD COLUMN prev_cert_fingerprint TEXT;
ALTER TABLE agents ADD COLUMN prev_cert_expire_time BIGINT;
CREATE UNIQUE INDEX agents_prev_cert ON agents (prev_cert_fingerprint);
