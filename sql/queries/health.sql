-- name: ping()$
-- Cheapest round trip that proves a connection works.
SELECT 1;
