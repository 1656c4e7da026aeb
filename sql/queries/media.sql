-- name: insert-media(user_id, original_key, thumbnail_key, source_key, content_type, width, height, bytes, thumbnail_width, thumbnail_height, blurhash)^
INSERT INTO media (user_id, original_key, thumbnail_key, source_key, content_type, width, height,
                   bytes, thumbnail_width, thumbnail_height, blurhash)
VALUES (:user_id, :original_key, :thumbnail_key, :source_key, :content_type, :width, :height,
        :bytes, :thumbnail_width, :thumbnail_height, :blurhash)
RETURNING media_id, created_at;

-- name: forget-stale-idempotency-key(user_id, idempotency_key)!
-- Answers are kept 24 hours; a claim older than 10 minutes belonged to a process that died.
DELETE FROM upload_idempotency
WHERE user_id = :user_id AND idempotency_key = :idempotency_key
  AND (created_at < now() - interval '24 hours'
       OR (response IS NULL AND created_at < now() - interval '10 minutes'));

-- name: claim-idempotency-key(user_id, idempotency_key, body_sha256)$
INSERT INTO upload_idempotency (user_id, idempotency_key, body_sha256)
VALUES (:user_id, :idempotency_key, :body_sha256)
ON CONFLICT DO NOTHING
RETURNING true;

-- name: idempotency-record(user_id, idempotency_key)^
SELECT body_sha256, response FROM upload_idempotency
WHERE user_id = :user_id AND idempotency_key = :idempotency_key;

-- name: complete-idempotency-key(user_id, idempotency_key, media_id, response)!
UPDATE upload_idempotency SET media_id = :media_id, response = :response
WHERE user_id = :user_id AND idempotency_key = :idempotency_key;

-- name: release-idempotency-key(user_id, idempotency_key)!
DELETE FROM upload_idempotency
WHERE user_id = :user_id AND idempotency_key = :idempotency_key AND response IS NULL;

-- name: media-keys()
-- Every object key a media row refers to, every presigned upload's until it expires or is
-- completed, and every key queued for deletion (whose delete is under way or will be
-- retried): what the orphan sweep must leave alone.
SELECT media_object_keys(original_key, thumbnail_key, source_key, incoming_key, renditions)
    AS key
FROM media
UNION ALL
SELECT object_key FROM direct_uploads WHERE completed_at IS NULL
UNION ALL
SELECT object_key FROM object_deletions;
