-- name: post(post_id, viewer_id)^
SELECT p.post_id, p.caption, p.alt_text, p.like_count,
       p.created_at, u.user_id AS author_id, u.username, u.display_name,
       m.original_key, m.thumbnail_key, m.width, m.height, m.thumbnail_width,
       m.thumbnail_height, m.blurhash,
       EXISTS (SELECT 1 FROM likes l WHERE l.user_id = :viewer_id AND l.post_id = p.post_id)
           AS liked_by_me
FROM posts p
JOIN users u ON u.user_id = p.author_id
JOIN media m ON m.media_id = p.media_id
WHERE p.post_id = :post_id;

-- name: author-posts(username, viewer_id, before_time, before_id, page_size)
-- One page of a user's posts, newest first, below the cursor: a walk down
-- idx_posts_author_time (post ids break ties between posts of the same microsecond).
SELECT p.post_id, p.caption, p.alt_text, p.like_count,
       p.created_at, u.user_id AS author_id, u.username, u.display_name,
       m.original_key, m.thumbnail_key, m.width, m.height, m.thumbnail_width,
       m.thumbnail_height, m.blurhash,
       EXISTS (SELECT 1 FROM likes l WHERE l.user_id = :viewer_id AND l.post_id = p.post_id)
           AS liked_by_me
FROM users u
JOIN posts p ON p.author_id = u.user_id
JOIN media m ON m.media_id = p.media_id
WHERE u.username = :username
  AND p.created_at <= :before_time
  AND (p.created_at < :before_time OR p.post_id < :before_id)
ORDER BY p.created_at DESC, p.post_id DESC
LIMIT :page_size;

-- name: media-owner(media_id)^
SELECT user_id, original_key, thumbnail_key, status, failure FROM media WHERE media_id = :media_id;

-- name: create-post(author_id, media_id, caption, alt_text, fanned_out)$
-- Nothing comes back when the media already has a post (UNIQUE (media_id)).
INSERT INTO posts (author_id, media_id, caption, alt_text, fanned_out)
VALUES (:author_id, :media_id, :caption, :alt_text, :fanned_out)
ON CONFLICT (media_id) DO NOTHING
RETURNING post_id;

-- name: like(user_id, post_id)^
-- The like row and the counter change in one statement, so in one transaction: the count
-- always equals the rows. Nothing comes back when the post does not exist.
WITH target AS (SELECT post_id, like_count FROM posts WHERE post_id = :post_id),
     added AS (
         INSERT INTO likes (user_id, post_id)
         SELECT :user_id, post_id FROM target
         ON CONFLICT (user_id, post_id) DO NOTHING
         RETURNING post_id
     ),
     counted AS (
         UPDATE posts SET like_count = like_count + 1
         WHERE post_id IN (SELECT post_id FROM added)
         RETURNING like_count
     )
SELECT t.post_id, coalesce((SELECT like_count FROM counted), t.like_count) AS like_count
FROM target t;

-- name: unlike(user_id, post_id)^
WITH target AS (SELECT post_id, like_count FROM posts WHERE post_id = :post_id),
     removed AS (
         DELETE FROM likes
         WHERE user_id = :user_id AND post_id IN (SELECT post_id FROM target)
         RETURNING post_id
     ),
     counted AS (
         UPDATE posts SET like_count = like_count - 1
         WHERE post_id IN (SELECT post_id FROM removed)
         RETURNING like_count
     )
SELECT t.post_id, coalesce((SELECT like_count FROM counted), t.like_count) AS like_count
FROM target t;
