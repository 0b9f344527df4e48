-- Web console sessions (PostgreSQL), shared by every replica. The cookie's value is never
-- stored, only its SHA-256; the API token the session calls with is sealed under the primary
-- key-encryption key (AES-GCM, bound to the session's hash).
CREATE TABLE console_sessions (
    id_hash      TEXT   PRIMARY KEY,
    token_id     BIGINT NOT NULL,
    actor_name   TEXT   NOT NULL,
    role         TEXT   NOT NULL,
    csrf         TEXT   NOT NULL,
    key_id       BIGINT NOT NULL,
    token_sealed BYTEA  NOT NULL,
    create_time  BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL
);
CREATE INDEX console_sessions_token ON console_sessions (token_id);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen);
