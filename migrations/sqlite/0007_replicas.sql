-- The server replicas that share this database (SQLite: the one server).
CREATE TABLE replicas (
    id             TEXT    PRIMARY KEY,
    address        TEXT    NOT NULL,
    agent_address  TEXT    NOT NULL,
    hostname       TEXT    NOT NULL,
    version        TEXT    NOT NULL,
    start_time     INTEGER NOT NULL,
    heartbeat_time INTEGER NOT NULL
);
