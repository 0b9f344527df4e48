-- Key rotation (SQLite): every ciphertext records the id of the key-encryption key it is sealed
-- under, so that `mailplane keys rotate` can re-encrypt in batches while servers keep serving
-- (each ciphertext opens with its own key; new ones use the primary key). Everything sealed so
-- far is under key 1, the key file's only key.
ALTER TABLE credentials ADD COLUMN secret_key_id INTEGER;
UPDATE credentials SET secret_key_id = 1 WHERE secret_ciphertext IS NOT NULL;
CREATE INDEX credentials_secret_key_id ON credentials (secret_key_id);

-- Sealed values in `meta` (the agent CA, the token HMAC key) carry their key id; other values
-- (key checks, the primary key id) have none.
ALTER TABLE meta ADD COLUMN key_id INTEGER;
UPDATE meta SET key_id = 1 WHERE key = 'agent_ca';
-- One key check per key id.
UPDATE meta SET key = 'key_check:1' WHERE key = 'key_check';

ALTER TABLE connector_jobs ADD COLUMN job_key_id INTEGER NOT NULL DEFAULT 1;
