-- The audit log's hash chain (PostgreSQL). Writers insert events unsealed, as before; the sealer
-- (one at a time, in the background) gives each committed event the next `seq`, the previous
-- event's hash as `prev_hash`, and `hash`, the SHA-256 (hex) of the event's canonical encoding
-- with both (see server/src/domain/audit_chain.rs). The head of the chain is the row with the
-- highest `seq`.
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_events_seq ON audit_events (seq);
-- What the sealer looks for.
CREATE INDEX audit_events_unsealed ON audit_events (time, id) WHERE seq IS NULL;
