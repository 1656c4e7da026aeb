-- Image URLs are built when a response is rendered, from IMAGE_BASE_URL (app/delivery.py), so
-- a change of it reaches old posts too: posts keep no URL of their own. Each post's media row
-- already holds the keys its URLs were made from. The URLs are checked against them before
-- they go, so no post can lose its images here: any mismatch stops the migration.
DO $$
DECLARE
    mismatched bigint;
BEGIN
    SELECT count(*) INTO mismatched
    FROM posts p
    JOIN media m ON m.media_id = p.media_id
    WHERE right(p.image_url, length(m.original_key) + 1) <> '/' || m.original_key
       OR right(p.thumbnail_url, length(m.thumbnail_key) + 1) <> '/' || m.thumbnail_key;
    IF mismatched > 0 THEN
        RAISE EXCEPTION '% posts have image URLs that do not name their media''s keys', mismatched;
    END IF;
END
$$;

ALTER TABLE posts DROP COLUMN image_url, DROP COLUMN thumbnail_url;

-- A retried upload's recorded answer holds keys too; its URLs are built when it is replayed.
UPDATE upload_idempotency u
SET response = (u.response - 'original_url' - 'thumbnail_url')
    || jsonb_build_object('original_key', m.original_key, 'thumbnail_key', m.thumbnail_key)
FROM media m
WHERE m.media_id = u.media_id AND u.response ? 'original_url';
