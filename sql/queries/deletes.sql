-- Deleting posts, media and accounts. Each delete removes its rows and queues its objects'
-- keys in object_deletions in one transaction (app/deletes.py runs them in one): no row is
-- left naming a missing object, and no object is left without someone to delete it.

-- name: lock-post(post_id)^
SELECT author_id, media_id FROM posts WHERE post_id = :post_id FOR UPDATE;

-- name: lock-media(media_id)^
SELECT m.user_id, EXISTS (SELECT 1 FROM posts p WHERE p.media_id = m.media_id) AS posted
FROM media m WHERE m.media_id = :media_id FOR UPDATE;

-- name: lock-user(user_id)$
SELECT user_id FROM users WHERE user_id = :user_id FOR UPDATE;

-- name: tombstone-owner(kind, id)$
SELECT owner_id FROM tombstones WHERE kind = :kind AND id = :id;

-- name: bury(kind, id, owner_id)!
INSERT INTO tombstones (kind, id, owner_id) VALUES (:kind, :id, :owner_id)
ON CONFLICT (kind, id) DO NOTHING;

-- name: delete-post(post_id)!
-- Its likes go with it (ON DELETE CASCADE); the media row stays until delete-media.
DELETE FROM posts WHERE post_id = :post_id;

-- name: delete-media(media_id)
-- The row goes and its keys are queued; the keys come back for the delete after the commit.
WITH gone AS (
    DELETE FROM media WHERE media_id = :media_id
    RETURNING original_key, thumbnail_key, source_key, incoming_key, renditions
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
SELECT key FROM keys;

-- name: unlike-everything(user_id)!
-- The like counts of other people's posts a leaving account liked, before its likes go with it.
UPDATE posts p SET like_count = p.like_count - 1
FROM likes l
WHERE l.user_id = :user_id AND l.post_id = p.post_id AND p.author_id <> :user_id;

-- name: delete-user(user_id)
-- The account with its posts (and their likes), its media, follows, likes, presigned uploads
-- and tombstones; every object key its media and its unfinished uploads named is queued and
-- comes back.
WITH gone_posts AS (
    DELETE FROM posts WHERE author_id = :user_id RETURNING post_id
),
gone_media AS (
    -- After its posts: the same statement sees them gone, so no foreign key stands in the way.
    DELETE FROM media WHERE user_id = :user_id
    RETURNING original_key, thumbnail_key, source_key, incoming_key, renditions
),
keys AS (
    SELECT media_object_keys(original_key, thumbnail_key, source_key, incoming_key, renditions)
        AS key
    FROM gone_media
    UNION
    -- Uploaded straight to S3 and never completed: the cascade takes their rows.
    SELECT object_key FROM direct_uploads WHERE user_id = :user_id AND completed_at IS NULL
),
queued AS (
    INSERT INTO object_deletions (object_key) SELECT key FROM keys
    ON CONFLICT (object_key) DO NOTHING
),
gone_user AS (
    DELETE FROM users WHERE user_id = :user_id
)
SELECT key FROM keys;

-- name: queued-deletions(batch)
-- The oldest keys still to delete from S3.
SELECT object_key FROM object_deletions ORDER BY queued_at LIMIT :batch;

-- name: forget-deletions(keys)!
-- S3 has confirmed these deletes.
DELETE FROM object_deletions WHERE object_key = ANY (:keys);

-- name: count-failed-deletions(keys)!
UPDATE object_deletions SET attempts = attempts + 1 WHERE object_key = ANY (:keys);
