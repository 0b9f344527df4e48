-- Connector jobs handed between replicas: a replica with no stream to any of a connector's
-- agents queues the job here, and a replica that has one claims it (with a lease it renews),
-- runs it on its agent, and writes the agent's updates and the end back for the first one.
CREATE TABLE connector_jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    connector_id INTEGER NOT NULL,
    subject      TEXT NOT NULL,
    job_nonce    BLOB NOT NULL,
    job_sealed   BLOB NOT NULL,
    state        TEXT NOT NULL,
    replica_id   TEXT,
    agent        TEXT NOT NULL DEFAULT '',
    lease_until  INTEGER,
    data_started BOOLEAN NOT NULL DEFAULT 0,
    outcome      BLOB,
    create_time  INTEGER NOT NULL,
    update_time  INTEGER NOT NULL
);
CREATE INDEX connector_jobs_queue ON connector_jobs (connector_id, state, id);

-- The agent's updates of a job, in order (encoded mailplane.v1.JobUpdate).
CREATE TABLE connector_job_updates (
    job_id INTEGER NOT NULL REFERENCES connector_jobs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    body   BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
);
