-- name: create-migrations-table#
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: lock-migrations()$
-- Held for the session, so several processes migrating at once take turns.
SELECT pg_advisory_lock(hashtext('monogram.schema_migrations'));

-- name: unlock-migrations()$
SELECT pg_advisory_unlock(hashtext('monogram.schema_migrations'));

-- name: applied-migrations()
SELECT version, name, checksum FROM schema_migrations ORDER BY version;

-- name: record-migration(version, name, checksum)!
INSERT INTO schema_migrations (version, name, checksum) VALUES (:version, :name, :checksum);
