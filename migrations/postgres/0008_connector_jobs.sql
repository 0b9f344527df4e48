-- Connector jobs handed between replicas: a replica with no stream to any of a connector's
-- agents queues the job here, and a replica that has one claims it (with a lease it renews),
-- runs it on its agent, and writes the agent's updates and the end back for the first one.
CREATE TABLE connector_jobs (
    id           BIGSERIAL PRIMARY KEY,
    connector_id BIGINT NOT NULL,
    subject      TEXT NOT NULL,
    job_nonce    BYTEA NOT NULL,
    job_sealed   BYTEA NOT NULL,
    state        TEXT NOT NULL,
    replica_id   TEXT,
    agent        TEXT NOT NULL DEFAULT '',
    lease_until  BIGINT,
    data_started BOOLEAN NOT NULL DEFAULT FALSE,
    outcome      BYTEA,
    create_time  BIGINT NOT NULL,
    update_time  BIGINT NOT NULL
);
CREATE INDEX connector_jobs_queue ON connector_jobs (connector_id, state, id);

-- The agent's updates of a job, in order (encoded mailplane.v1.JobUpdate).
CREATE TABLE connector_job_updates (
    job_id BIGINT NOT NULL REFERENCES connector_jobs (id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    body   BYTEA NOT NULL,
    PRIMARY KEY (job_id, seq)
);
