-- The outbox (SQLite): messages, their recipients and their delivery attempts; and the sender
-- role for API tokens.

-- SQLite cannot change a CHECK constraint in place: the tokens table is rebuilt with the new
-- role allowed (nothing references it).
CREATE TABLE api_tokens_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    display_name   TEXT    NOT NULL,
    name_key       TEXT    NOT NULL UNIQUE,
    role           TEXT    NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'sender')),
    secret_hash    TEXT    NOT NULL,
    expire_time    INTEGER,
    revoked        BOOLEAN NOT NULL DEFAULT 0,
    create_time    INTEGER NOT NULL,
    last_use_time  INTEGER
);
INSERT INTO api_tokens_new SELECT id, display_name, name_key, role, secret_hash, expire_time,
    revoked, create_time, last_use_time FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;

-- One row per message. `body` is the built message (CRLF, not dot-stuffed), NULL once purged;
-- `payload` is the API view (mailplane.v1.Message without bodies' attachments' content).
CREATE TABLE messages (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id        INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    request_id        TEXT,
    state             TEXT    NOT NULL CHECK (state IN
                          ('queued', 'sending', 'deferred', 'sent', 'failed', 'cancelled')),
    next_attempt_time INTEGER,
    attempt_count     INTEGER NOT NULL DEFAULT 0,
    envelope_from     TEXT    NOT NULL,
    message_id        TEXT    NOT NULL,
    size_bytes        INTEGER NOT NULL,
    body              BLOB,
    body_purge_time   INTEGER,
    last_error        TEXT    NOT NULL DEFAULT '',
    payload           BLOB    NOT NULL,
    create_time       INTEGER NOT NULL,
    update_time       INTEGER NOT NULL
);
-- Idempotency (AIP-155): a request id names one message; after 24 h it may be reused (the old
-- message's request id is cleared then).
CREATE UNIQUE INDEX messages_request_id ON messages (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX messages_due ON messages (next_attempt_time) WHERE state IN ('queued', 'deferred');
CREATE INDEX messages_account ON messages (account_id, id);

CREATE TABLE message_recipients (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    address    TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('to', 'cc', 'bcc')),
    state      TEXT    NOT NULL CHECK (state IN ('pending', 'accepted', 'rejected')),
    last_reply TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (message_id, position)
);
CREATE INDEX message_recipients_address ON message_recipients (lower(address));

CREATE TABLE message_attempts (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id           INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    attempt_time         INTEGER NOT NULL,
    agent                TEXT    NOT NULL,
    reply_code           INTEGER NOT NULL,
    enhanced_status_code TEXT    NOT NULL,
    relay_queue_id       TEXT    NOT NULL,
    duration_micros      INTEGER NOT NULL,
    failure_class        TEXT    NOT NULL,
    message              TEXT    NOT NULL,
    hint                 TEXT    NOT NULL
);
CREATE INDEX message_attempts_message ON message_attempts (message_id, id);

-- Accounts whose delivery is paused: their messages keep queueing and are not sent.
CREATE TABLE paused_accounts (
    account_id INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    pause_time INTEGER NOT NULL
);
