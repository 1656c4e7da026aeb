-- name: ping()$
-- Cheapest round trip that proves a connection works.
SELECT 1;

-- name: server-connections()
-- For the connections gauge, sampled every few seconds: every backend of the server.
SELECT coalesce(state, 'other') AS state, count(*) AS connections
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY 1;

-- name: max-connections()$
SELECT current_setting('max_connections');
