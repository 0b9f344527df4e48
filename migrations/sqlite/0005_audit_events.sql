-- The audit log (SQLite): append-only; events are written in the same transaction as the
-- change they record.
CREATE TABLE audit_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    time     INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    peer     TEXT    NOT NULL,
    rpc      TEXT    NOT NULL,
    resource TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    diff     TEXT    NOT NULL
);
CREATE INDEX audit_events_resource ON audit_events (resource, id);
CREATE INDEX audit_events_time ON audit_events (time);
