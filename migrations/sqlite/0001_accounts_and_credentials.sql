-- SMTP accounts and the credentials they authenticate with (SQLite).
-- Times are microseconds since the Unix epoch. `version` backs the etag.

CREATE TABLE credentials (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    display_name       TEXT    NOT NULL,
    username           TEXT    NOT NULL,
    kind               TEXT    NOT NULL CHECK (kind IN ('password', 'oauth2_token')),
    -- AES-256-GCM under the key-encryption key, with the resource name as associated data.
    secret_nonce       BLOB,
    secret_ciphertext  BLOB,
    secret_update_time INTEGER,
    version            INTEGER NOT NULL,
    create_time        INTEGER NOT NULL,
    update_time        INTEGER NOT NULL
);

CREATE TABLE accounts (
    id                          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_name                TEXT    NOT NULL,
    -- The case-folded name; unique so that "Alerts" and "alerts" cannot both exist.
    name_key                    TEXT    NOT NULL UNIQUE,
    enabled                     BOOLEAN NOT NULL,
    sender_email                TEXT    NOT NULL,
    reply_to_email              TEXT,
    return_path_email           TEXT,
    confirmation_email          TEXT,
    is_default                  BOOLEAN NOT NULL DEFAULT 0,
    send_read_confirmation      BOOLEAN NOT NULL,
    force_settings              BOOLEAN NOT NULL,
    enable_footer               BOOLEAN NOT NULL,
    footer_text                 TEXT    NOT NULL,
    host                        TEXT    NOT NULL,
    port                        INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    security                    TEXT    NOT NULL,
    ignore_certificate_errors   BOOLEAN NOT NULL,
    use_authentication          BOOLEAN NOT NULL,
    auth_mechanism              TEXT,
    credential_id               INTEGER REFERENCES credentials (id) ON DELETE RESTRICT,
    use_network_connector       BOOLEAN NOT NULL,
    network_connector_id        INTEGER,
    helo_name                   TEXT,
    charset                     TEXT    NOT NULL,
    plain_text_only             BOOLEAN NOT NULL,
    attachment_size_limit_bytes INTEGER NOT NULL,
    version                     INTEGER NOT NULL,
    create_time                 INTEGER NOT NULL,
    update_time                 INTEGER NOT NULL,
    -- A default account must be enabled.
    CHECK (NOT is_default OR enabled)
);

-- At most one default account, enforced by the database whatever the code does.
CREATE UNIQUE INDEX accounts_single_default ON accounts (is_default) WHERE is_default;
CREATE INDEX accounts_credential ON accounts (credential_id);

-- Small facts about the installation, e.g. the key check for the key-encryption key.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
