-- Test e-mails and their transcripts (SQLite). The transcript and result are kept in their
-- published protobuf form (mailplane.v1.SmtpTest), so history reads back exactly as it was
-- reported; the columns beside it are what lists filter and sort on.
CREATE TABLE smtp_tests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    state       TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);
CREATE INDEX smtp_tests_account ON smtp_tests (account_id, id);
CREATE INDEX smtp_tests_unfinished ON smtp_tests (state) WHERE state IN ('queued', 'running');
