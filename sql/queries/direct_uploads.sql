-- V1 uploads: presigned, sent straight to S3, completed, processed by a media worker
-- (app/direct_uploads.py for the API's part, app/media_jobs.py for the worker's).

-- name: insert-direct-upload(user_id, object_key, content_type, declared_bytes, ttl_seconds, max_unposted)^
-- The upload is recorded unless the user holds max_unposted media no post uses; either way
-- the count comes back (upload_id is NULL when refused). One statement, one round trip.
WITH unposted AS (
    SELECT count(*) AS media FROM media m
    WHERE m.user_id = :user_id
      AND NOT EXISTS (SELECT 1 FROM posts p WHERE p.media_id = m.media_id)
),
recorded AS (
    INSERT INTO direct_uploads (user_id, object_key, content_type, declared_bytes, expires_at)
    SELECT :user_id, :object_key, :content_type, :declared_bytes,
           now() + make_interval(secs => :ttl_seconds)
    FROM unposted WHERE unposted.media < :max_unposted
    RETURNING upload_id, expires_at
)
SELECT recorded.upload_id, recorded.expires_at, unposted.media AS unposted
FROM unposted LEFT JOIN recorded ON true;

-- name: direct-upload(upload_id, user_id)^
-- Someone else's upload reads as missing.
SELECT object_key, content_type, declared_bytes, media_id, abandoned_at,
       expires_at < now() AS expired
FROM direct_uploads WHERE upload_id = :upload_id AND user_id = :user_id;

-- name: complete-direct-upload(upload_id, user_id, original_key, thumbnail_key, source_key, incoming_key, content_type, width, height, bytes)^
-- Records the media, processing, and ties the upload to it, in one statement. Of concurrent
-- completes, the first locks the upload row; the others wait for it, find it completed, and
-- get nothing: they read the media it recorded.
WITH claimed AS (
    SELECT upload_id FROM direct_uploads
    WHERE upload_id = :upload_id AND completed_at IS NULL AND abandoned_at IS NULL
    FOR UPDATE
),
recorded AS (
    INSERT INTO media (user_id, original_key, thumbnail_key, source_key, incoming_key,
                       content_type, width, height, bytes, status, completed_at, enqueued_at,
                       enqueues)
    SELECT :user_id, :original_key, :thumbnail_key, :source_key, :incoming_key, :content_type,
           :width, :height, :bytes, 'processing', now(), now(), 1
    FROM claimed
    RETURNING media_id, status, content_type, bytes, created_at
),
linked AS (
    UPDATE direct_uploads SET completed_at = now(), media_id = recorded.media_id
    FROM recorded WHERE direct_uploads.upload_id = :upload_id
)
SELECT media_id, status, content_type, bytes, created_at FROM recorded;

-- name: completed-media(upload_id)$
SELECT media_id FROM direct_uploads WHERE upload_id = :upload_id;

-- name: owned-media(media_id, user_id)^
-- A media row as its owner sees it (GET /v1/media/{id}); someone else's reads as missing.
SELECT media_id, status, failure, content_type, width, height, bytes, original_key,
       thumbnail_key, thumbnail_width, thumbnail_height, blurhash, renditions, created_at,
       ready_at
FROM media WHERE media_id = :media_id AND user_id = :user_id;

-- name: media-job(media_id)^
-- What a media worker needs to process one job.
SELECT user_id, status, content_type, incoming_key, original_key, thumbnail_key, source_key,
       bytes, completed_at
FROM media WHERE media_id = :media_id;

-- name: media-ready(media_id, width, height, thumbnail_width, thumbnail_height, blurhash, renditions)^
-- Only a processing row becomes ready: a job delivered twice finds it done. The incoming key
-- is forgotten here; its object is deleted next (or by the orphan sweep, if that fails).
UPDATE media SET status = 'ready', width = :width, height = :height,
                 thumbnail_width = :thumbnail_width, thumbnail_height = :thumbnail_height,
                 blurhash = :blurhash, renditions = :renditions, incoming_key = NULL,
                 ready_at = now()
WHERE media_id = :media_id AND status = 'processing'
RETURNING completed_at, ready_at;

-- name: media-failed(media_id, failure)$
-- Only a processing row fails; the key of what was uploaded comes back, to be deleted.
WITH old AS (
    SELECT media_id, incoming_key FROM media
    WHERE media_id = :media_id AND status = 'processing'
    FOR UPDATE
)
UPDATE media m SET status = 'failed', failure = :failure, incoming_key = NULL
FROM old WHERE m.media_id = old.media_id
RETURNING old.incoming_key;

-- name: requeue-stuck-media(older_than_seconds, batch)
-- Processing media whose job was queued long ago: a lost message, a queue restarted empty, a
-- worker that kept dying. They are queued again, and the time is moved on.
UPDATE media SET enqueued_at = now(), enqueues = enqueues + 1
WHERE media_id IN (
    SELECT media_id FROM media
    WHERE status = 'processing' AND enqueued_at < now() - make_interval(secs => :older_than_seconds)
    ORDER BY enqueued_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
RETURNING media_id;

-- name: oldest-processing-seconds()$
-- How long the oldest media still processing has waited since its upload was completed.
SELECT coalesce(extract(epoch FROM now() - min(completed_at)), 0)::float8
FROM media WHERE status = 'processing';

-- name: abandon-expired-uploads(grace_seconds, batch)^
-- Presigned uploads never completed, expired longer ago than the grace: what they sent is
-- queued for deletion and completing them is 410 from now on.
WITH abandoned AS (
    UPDATE direct_uploads SET abandoned_at = now()
    WHERE upload_id IN (
        SELECT upload_id FROM direct_uploads
        WHERE completed_at IS NULL AND abandoned_at IS NULL
          AND expires_at < now() - make_interval(secs => :grace_seconds)
        ORDER BY expires_at
        LIMIT :batch
    )
    RETURNING object_key
),
queued AS (
    INSERT INTO object_deletions (object_key) SELECT object_key FROM abandoned
    ON CONFLICT (object_key) DO NOTHING
)
SELECT (SELECT count(*) FROM abandoned) AS uploads,
       (SELECT array_agg(object_key) FROM abandoned) AS keys;
