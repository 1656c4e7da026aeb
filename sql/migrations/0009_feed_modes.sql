-- FEED_MODE=push|hybrid: timelines in Redis hold the posts fanned out on write. A post that is
-- not (hybrid mode, an author with WHALE_FOLLOWERS or more when it was made) is pulled at read
-- time instead, so each post says which it is, and its author is listed among the authors
-- whose posts are pulled: a reader probes only those it follows.
ALTER TABLE posts ADD COLUMN fanned_out boolean NOT NULL DEFAULT true;
CREATE INDEX idx_posts_pulled ON posts (author_id, created_at DESC, post_id DESC)
    WHERE NOT fanned_out;

CREATE TABLE pulled_authors (
    author_id bigint PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    since     timestamptz NOT NULL DEFAULT now()
);
