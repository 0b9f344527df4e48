-- The server replicas that share this database (SQLite: the one server), and where agents
-- are connected.
CREATE TABLE replicas (
    id             TEXT    PRIMARY KEY,
    address        TEXT    NOT NULL,
    agent_address  TEXT    NOT NULL,
    hostname       TEXT    NOT NULL,
    version        TEXT    NOT NULL,
    start_time     INTEGER NOT NULL,
    heartbeat_time INTEGER NOT NULL
);

-- Which replica holds each agent stream (an agent may hold several), so that every replica
-- knows where a connector's agents are connected. A replica's rows go with it.
CREATE TABLE agent_streams (
    id              TEXT    PRIMARY KEY,
    replica_id      TEXT    NOT NULL REFERENCES replicas (id) ON DELETE CASCADE,
    agent_id        INTEGER  NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    connector_id    INTEGER  NOT NULL,
    connected_since INTEGER  NOT NULL
);
CREATE INDEX agent_streams_connector ON agent_streams (connector_id);
