-- The relays a credential's secret may be sent to: `HOST` or `HOST:PORT` patterns, separated
-- by spaces (a pattern has none). An account may use the credential only while its host and
-- port match one, and a session sends AUTH only to such a relay. Existing credentials get the
-- host and port of every account that uses them, so nothing that works stops working; a
-- credential no account uses gets none, and cannot be used until an admin sets them.
ALTER TABLE credentials ADD COLUMN allowed_destinations TEXT NOT NULL DEFAULT '';
UPDATE credentials SET allowed_destinations = COALESCE((
    SELECT group_concat(destination, ' ')
    FROM (
        SELECT DISTINCT
            CASE WHEN a.host LIKE '%:%' THEN '[' || a.host || ']' ELSE lower(a.host) END
                || ':' || a.port AS destination
        FROM accounts a
        WHERE a.credential_id = credentials.id
        ORDER BY destination
    )
), '');
