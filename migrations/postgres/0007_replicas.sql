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

-- Which replica holds each agent stream (an agent may hold several), so that every replica
-- knows where a connector's agents are connected. A replica's rows go with it.
CREATE TABLE agent_streams (
    id              TEXT    PRIMARY KEY,
    replica_id      TEXT    NOT NULL REFERENCES replicas (id) ON DELETE CASCADE,
    agent_id        BIGINT  NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    connector_id    BIGINT  NOT NULL,
    connected_since BIGINT  NOT NULL
);
CREATE INDEX agent_streams_connector ON agent_streams (connector_id);
