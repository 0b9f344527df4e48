-- OAuth2 credentials that get their own access tokens: the grant they use, the token endpoint,
-- the client id and the scopes asked for (empty for other kinds). Their `kind` stays
-- 'oauth2_token' (the table's CHECK, which SQLite cannot change in place while accounts refer to
-- the table, allows only it), and `oauth_grant` tells them apart. The client secret is the credential's sealed
-- `secret`; a refresh token is sealed apart, bound to the credential's name with the suffix
-- `#refresh_token`.
ALTER TABLE credentials ADD COLUMN oauth_grant TEXT NOT NULL DEFAULT ''
    CHECK (oauth_grant IN ('', 'client_credentials', 'refresh_token'));
ALTER TABLE credentials ADD COLUMN token_url TEXT NOT NULL DEFAULT '';
ALTER TABLE credentials ADD COLUMN client_id TEXT NOT NULL DEFAULT '';
ALTER TABLE credentials ADD COLUMN scope TEXT NOT NULL DEFAULT '';
-- Who asks the token endpoint: the server, or the agents of the accounts' network connector.
ALTER TABLE credentials ADD COLUMN token_source TEXT NOT NULL DEFAULT 'server'
    CHECK (token_source IN ('server', 'connector'));
ALTER TABLE credentials ADD COLUMN refresh_nonce BLOB;
ALTER TABLE credentials ADD COLUMN refresh_ciphertext BLOB;
ALTER TABLE credentials ADD COLUMN refresh_key_id BIGINT;
ALTER TABLE credentials ADD COLUMN refresh_update_time BIGINT;

-- The access token a credential last got, sealed under key `token_key_id` (bound to
-- `credentials/{id}#access_token`),
-- shared by every replica until shortly before it expires. `generation` counts fetches, so a
-- session that saw a token refused refreshes only if no one has replaced it meanwhile.
CREATE TABLE credential_tokens (
    credential_id BIGINT PRIMARY KEY REFERENCES credentials (id) ON DELETE CASCADE,
    token_key_id     BIGINT NOT NULL,
    token_nonce      BLOB NOT NULL,
    token_ciphertext BLOB NOT NULL,
    scope       TEXT   NOT NULL,
    expire_time BIGINT NOT NULL,
    fetch_time  BIGINT NOT NULL,
    generation  BIGINT NOT NULL
);
