-- The feed in FEED_MODE=push|hybrid (app/timelines.py, app/fanout.py): the posts a timeline
-- names, the pulled posts beside them, and what fan-out and follows read.

-- name: feed-timeline-page(user_id, ids, before_time, before_id, page_size)
-- One page in FEED_MODE=push|hybrid, in one statement: the posts the reader's timeline names
-- (`ids`; a post that is gone, or whose author the reader no longer follows, is simply not
-- there) and the pulled posts no timeline holds (not fanned out: hybrid mode's whales) by the
-- authors the reader follows, below the cursor: one probe of follows per pulled author, then
-- each author's newest such posts from idx_posts_pulled. `from_timeline` tells them apart.
WITH named AS (
    SELECT p.post_id, p.author_id, p.media_id, p.caption, p.like_count, p.created_at,
           p.alt_text, true AS from_timeline
    FROM posts p
    WHERE p.post_id = ANY(CAST(:ids AS bigint[]))
      AND EXISTS (
          SELECT 1 FROM follows f WHERE f.follower_id = :user_id AND f.followee_id = p.author_id
      )
),
pulled AS (
    SELECT p.post_id, p.author_id, p.media_id, p.caption, p.like_count, p.created_at,
           p.alt_text, false AS from_timeline
    FROM pulled_authors w
    JOIN follows f ON f.follower_id = :user_id AND f.followee_id = w.author_id
    CROSS JOIN LATERAL (
        SELECT * FROM posts p
        WHERE p.author_id = w.author_id AND NOT p.fanned_out
          AND p.created_at <= :before_time
          AND (p.created_at < :before_time OR p.post_id < :before_id)
        ORDER BY p.created_at DESC, p.post_id DESC
        LIMIT :page_size
    ) p
),
page AS MATERIALIZED (
    SELECT * FROM named
    UNION ALL
    SELECT * FROM pulled WHERE post_id NOT IN (SELECT post_id FROM named)
    ORDER BY created_at DESC, post_id DESC
    LIMIT :page_size
)
SELECT page.post_id, page.caption, page.like_count, page.created_at, page.alt_text,
       page.from_timeline, u.user_id AS author_id, u.username, u.display_name,
       m.original_key, m.thumbnail_key, m.width, m.height, m.thumbnail_width,
       m.thumbnail_height, m.blurhash,
       EXISTS (SELECT 1 FROM likes l WHERE l.user_id = :user_id AND l.post_id = page.post_id)
           AS liked_by_me
FROM page
JOIN users u ON u.user_id = page.author_id
JOIN media m ON m.media_id = page.media_id
ORDER BY page.created_at DESC, page.post_id DESC;

-- name: author-timeline-entries(author_id, count)
-- An author's newest fanned-out posts: what a follow adds to the follower's timeline, and
-- an unfollow takes out.
SELECT post_id, created_at FROM posts
WHERE author_id = :author_id AND fanned_out
ORDER BY created_at DESC, post_id DESC
LIMIT :count;

-- name: post-to-fan-out(post_id)^
SELECT author_id, created_at, fanned_out FROM posts WHERE post_id = :post_id;

-- name: followers-after(user_id, after_id, batch)
-- The next `batch` followers of a user, by id: fan-out walks them in batches.
SELECT follower_id FROM follows
WHERE followee_id = :user_id AND follower_id > :after_id
ORDER BY follower_id
LIMIT :batch;

-- name: follower-count(user_id)$
SELECT count(*) FROM follows WHERE followee_id = :user_id;

-- name: mark-pulled-author(author_id)!
INSERT INTO pulled_authors (author_id) VALUES (:author_id) ON CONFLICT DO NOTHING;
