-- API tokens (SQLite). Only a keyed hash (HMAC-SHA256 under a key derived from the
-- key-encryption key) of each token's secret is stored.
CREATE TABLE api_tokens (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    display_name   TEXT    NOT NULL,
    name_key       TEXT    NOT NULL UNIQUE,
    role           TEXT    NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    secret_hash    TEXT    NOT NULL,
    expire_time    INTEGER,
    revoked        BOOLEAN NOT NULL DEFAULT 0,
    create_time    INTEGER NOT NULL,
    last_use_time  INTEGER
);
