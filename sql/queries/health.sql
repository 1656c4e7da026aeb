-- name: ping()$
-- Cheapest round trip that proves a connection works.
SELECT 1;

-- name: server-connections()
-- For the connections gauge, sampled every few seconds: every backend of the server, by
-- state. Every state comes back, with 0 if none: with several processes a gauge's labels
-- cannot be cleared, so a state that emptied must be set to 0.
SELECT s.state, count(a.state) AS connections
FROM (VALUES ('active'), ('idle'), ('idle in transaction'), ('other')) AS s (state)
LEFT JOIN (
    SELECT CASE WHEN state IN ('active', 'idle', 'idle in transaction') THEN state
                ELSE 'other' END AS state
    FROM pg_stat_activity
    WHERE backend_type = 'client backend'
) AS a USING (state)
GROUP BY s.state;

-- name: max-connections()$
SELECT current_setting('max_connections');
