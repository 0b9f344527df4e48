-- The server replicas that share this database: each registers at start, beats, and leaves.
CREATE TABLE replicas (
    id             TEXT   PRIMARY KEY,
    address        TEXT   NOT NULL,
    agent_address  TEXT   NOT NULL,
    hostname       TEXT   NOT NULL,
    version        TEXT   NOT NULL,
    start_time     BIGINT NOT NULL,
    heartbeat_time BIGINT NOT NULL
);
