-- name: claim-job(name, every_seconds)$
-- True for the one caller that may run the job now: it had not started within every_seconds.
INSERT INTO scheduled_jobs AS job (name, last_started)
VALUES (:name, now())
ON CONFLICT (name) DO UPDATE SET last_started = now()
WHERE job.last_started < now() - make_interval(secs => :every_seconds)
RETURNING true;

-- name: delete-unposted-media(older_than_seconds, batch)^
-- Media no post refers to, uploaded longer ago than the retention: the rows go and their keys
-- are queued in object_deletions in one statement, and come back for the delete after it
-- (app/deletes.py), so no row ever points at a deleted object and no object is forgotten.
WITH gone AS (
    DELETE FROM media
    WHERE media_id IN (
        SELECT m.media_id FROM media m
        WHERE m.created_at < now() - make_interval(secs => :older_than_seconds)
          AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.media_id = m.media_id)
        ORDER BY m.created_at
        LIMIT :batch
    )
    RETURNING media_id, original_key, thumbnail_key, source_key, incoming_key, renditions
),
keys AS (
    SELECT media_object_keys(original_key, thumbnail_key, source_key, incoming_key, renditions)
        AS key
    FROM gone
),
queued AS (
    INSERT INTO object_deletions (object_key) SELECT key FROM keys
    ON CONFLICT (object_key) DO NOTHING
)
SELECT (SELECT count(*) FROM gone) AS media, (SELECT array_agg(key) FROM keys) AS keys;

-- name: unposted-media-count(user_id)$
SELECT count(*) FROM media m
WHERE m.user_id = :user_id
  AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.media_id = m.media_id);
