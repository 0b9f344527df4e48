-- Network connectors, their agents, and one-time enrollment tokens (SQLite).

CREATE TABLE connectors (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    display_name TEXT    NOT NULL,
    name_key     TEXT    NOT NULL UNIQUE,
    description  TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    create_time  INTEGER NOT NULL,
    update_time  INTEGER NOT NULL
);

-- One row per enrolled agent. The agent is known by its client certificate's SHA-256.
CREATE TABLE agents (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    connector_id        INTEGER NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    hostname            TEXT    NOT NULL,
    version             TEXT    NOT NULL,
    cert_fingerprint    TEXT    UNIQUE,
    cert_not_after      INTEGER,
    revoked             BOOLEAN NOT NULL DEFAULT 0,
    enroll_time         INTEGER NOT NULL,
    last_heartbeat_time INTEGER
);
CREATE INDEX agents_connector ON agents (connector_id);

-- Tokens are stored as SHA-256 hashes only; `used_time` makes each one single-use.
CREATE TABLE enrollment_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    connector_id INTEGER NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL UNIQUE,
    expire_time  INTEGER NOT NULL,
    used_time    INTEGER,
    create_time  INTEGER NOT NULL
);
