-- name: claim-job(name, every_seconds)$
-- True for the one caller that may run the job now: it had not started within every_seconds.
INSERT INTO scheduled_jobs AS job (name, last_started)
VALUES (:name, now())
ON CONFLICT (name) DO UPDATE SET last_started = now()
WHERE job.last_started < now() - make_interval(secs => :every_seconds)
RETURNING true;

-- name: delete-unposted-media(older_than_seconds, batch)
-- Media no post refers to, uploaded longer ago than the retention: the rows go first and their
-- keys come back, so no row ever points at a deleted object (a failed object delete leaves an
-- orphan for the orphan sweep instead).
DELETE FROM media
WHERE media_id IN (
    SELECT m.media_id FROM media m
    WHERE m.created_at < now() - make_interval(secs => :older_than_seconds)
      AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.media_id = m.media_id)
    ORDER BY m.created_at
    LIMIT :batch
)
RETURNING original_key, thumbnail_key, source_key;

-- name: unposted-media-count(user_id)$
SELECT count(*) FROM media m
WHERE m.user_id = :user_id
  AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.media_id = m.media_id);
