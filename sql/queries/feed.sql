-- name: feed-recent(user_id, before_time, before_id, page_size)
-- Strategy 1 of the feed: the newest 500 posts of everyone below the cursor (a
-- bounded walk down idx_posts_created), keeping those by accounts the caller follows. When
-- that yields a whole page it is exactly the page - every post outside the window is older
-- than every post in it. It does when the followed accounts post a lot of what is new.
-- The walk stops at the page's last post: each post is checked with one probe of the
-- follows index, and OFFSET 0 keeps the planner from turning that check into a join,
-- which would lose the index order (it hashed every followed account, or every user,
-- and sorted all the probed posts). Authors and media are joined for the page alone.
-- The window is 500 posts (app.feed.PROBE_ROWS), written here rather than bound, and the
-- page size is read through a sub-select: then a plan made without the values is as good
-- as one made with them, and PostgreSQL plans this once per connection instead of on
-- every call (0.3 ms of planning for as much execution).
WITH page AS MATERIALIZED (
    SELECT recent.post_id, recent.author_id, recent.media_id, recent.caption,
           recent.like_count, recent.created_at,
           recent.alt_text
    FROM (
        SELECT p.post_id, p.author_id, p.media_id, p.caption, p.like_count, p.created_at,
               p.alt_text
        FROM posts p
        WHERE p.created_at <= :before_time
          AND (p.created_at < :before_time OR p.post_id < :before_id)
        ORDER BY p.created_at DESC, p.post_id DESC
        LIMIT 500
    ) recent
    WHERE EXISTS (
        SELECT 1 FROM follows f
        WHERE f.follower_id = :user_id AND f.followee_id = recent.author_id
        OFFSET 0
    )
    ORDER BY recent.created_at DESC, recent.post_id DESC
    LIMIT (SELECT CAST(:page_size AS integer))
)
SELECT page.post_id, page.caption, page.like_count,
       page.created_at, page.alt_text, u.user_id AS author_id, u.username, u.display_name,
       m.original_key, m.thumbnail_key, m.width, m.height, m.thumbnail_width,
       m.thumbnail_height, m.blurhash,
       EXISTS (SELECT 1 FROM likes l WHERE l.user_id = :user_id AND l.post_id = page.post_id)
           AS liked_by_me
FROM page
JOIN users u ON u.user_id = page.author_id
JOIN media m ON m.media_id = page.media_id
ORDER BY page.created_at DESC, page.post_id DESC;

-- name: feed-page(user_id, before_time, before_id, page_size)
-- Strategy 2 of the feed, for when strategy 1 (feed-recent) falls short: one page of the
-- caller's feed, newest first, the posts of every account they follow whose
-- (created_at, post_id) is below the cursor. Still O(F) - it is a pull model - but F index
-- probes instead of F unbounded scans:
--   1. newest: each followee's newest post below the cursor, one LIMIT 1 probe each on
--      idx_posts_author_time;
--   2. bound: the page_size-th newest of those times. At least page_size posts are that new,
--      so no older post can be on the page;
--   3. only followees whose newest post reaches the bound (page_size of them, plus ties) are
--      read again, from the bound up to the cursor.
WITH newest AS MATERIALIZED (
    SELECT f.followee_id, latest.created_at
    FROM follows f
    CROSS JOIN LATERAL (
        SELECT p.created_at
        FROM posts p
        WHERE p.author_id = f.followee_id
          AND p.created_at <= :before_time
          AND (p.created_at < :before_time OR p.post_id < :before_id)
        ORDER BY p.created_at DESC
        LIMIT 1
    ) latest
    WHERE f.follower_id = :user_id
),
bound AS (
    SELECT coalesce(
        (SELECT created_at FROM newest ORDER BY created_at DESC OFFSET :page_size - 1 LIMIT 1),
        '-infinity'::timestamptz
    ) AS created_at
),
page AS (
    SELECT p.*
    FROM newest n
    CROSS JOIN bound b
    CROSS JOIN LATERAL (
        SELECT p.post_id, p.author_id, p.media_id, p.caption, p.like_count, p.created_at,
               p.alt_text
        FROM posts p
        WHERE p.author_id = n.followee_id
          AND p.created_at >= b.created_at
          AND p.created_at <= :before_time
          AND (p.created_at < :before_time OR p.post_id < :before_id)
        ORDER BY p.created_at DESC, p.post_id DESC
        LIMIT :page_size
    ) p
    WHERE n.created_at >= b.created_at
    ORDER BY p.created_at DESC, p.post_id DESC
    LIMIT :page_size
)
SELECT page.post_id, page.caption, page.like_count,
       page.created_at, page.alt_text, u.user_id AS author_id, u.username, u.display_name,
       m.original_key, m.thumbnail_key, m.width, m.height, m.thumbnail_width,
       m.thumbnail_height, m.blurhash,
       EXISTS (SELECT 1 FROM likes l WHERE l.user_id = :user_id AND l.post_id = page.post_id)
           AS liked_by_me
FROM page
JOIN users u ON u.user_id = page.author_id
JOIN media m ON m.media_id = page.media_id
ORDER BY page.created_at DESC, page.post_id DESC;

-- name: feed-seed-literal(user_id)
-- The seed design's feed query, the baseline the bench measures against; the API does not
-- use it. (The seed writes ORDER BY created_at; follows has a created_at too, so it is named.)
SELECT posts.*
FROM posts
JOIN follows ON posts.author_id = follows.followee_id
WHERE follows.follower_id = :user_id
ORDER BY posts.created_at DESC
LIMIT 20;

-- name: feed-seed(user_id, before_time, before_id, page_size)
-- The seed's JOIN served through the API (FEED_QUERY=seed), so its failures can be seen over
-- HTTP. The page is feed-seed-literal's query as the seed writes it, with two additions that
-- the API's cursor needs: the (created_at, post_id) keyset below the cursor, and post_id
-- breaking ties in the order. Authors, media and likes are joined for the page alone, as in
-- the service's own strategies, so the JSON is the same.
WITH page AS MATERIALIZED (
    SELECT posts.*
    FROM posts
    JOIN follows ON posts.author_id = follows.followee_id
    WHERE follows.follower_id = :user_id
      AND posts.created_at <= :before_time
      AND (posts.created_at < :before_time OR posts.post_id < :before_id)
    ORDER BY posts.created_at DESC, posts.post_id DESC
    LIMIT :page_size
)
SELECT page.post_id, page.caption, page.like_count,
       page.created_at, page.alt_text, u.user_id AS author_id, u.username, u.display_name,
       m.original_key, m.thumbnail_key, m.width, m.height, m.thumbnail_width,
       m.thumbnail_height, m.blurhash,
       EXISTS (SELECT 1 FROM likes l WHERE l.user_id = :user_id AND l.post_id = page.post_id)
           AS liked_by_me
FROM page
JOIN users u ON u.user_id = page.author_id
JOIN media m ON m.media_id = page.media_id
ORDER BY page.created_at DESC, page.post_id DESC;
