-- The seed's four tables with its indexes, plus likes (one per user and post).
-- Column names follow the seed: user_id, post_id, follow_id, media_id.

CREATE TABLE users (
    user_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text        NOT NULL,
    display_name  text        NOT NULL DEFAULT '',
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- stored lower-case, so UNIQUE is case-insensitive
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_username_format CHECK (username ~ '^[a-z0-9_.]{3,30}$'),
    CONSTRAINT users_display_name_length CHECK (char_length(display_name) <= 64)
);

CREATE TABLE media (
    media_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    original_key  text        NOT NULL,
    thumbnail_key text        NOT NULL,
    content_type  text        NOT NULL,
    width         integer     NOT NULL,
    height        integer     NOT NULL,
    bytes         bigint      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT media_content_type CHECK (content_type IN ('image/jpeg', 'image/png', 'image/heic')),
    CONSTRAINT media_dimensions CHECK (width > 0 AND height > 0),
    CONSTRAINT media_bytes CHECK (bytes > 0),
    CONSTRAINT media_original_key_key UNIQUE (original_key),
    CONSTRAINT media_thumbnail_key_key UNIQUE (thumbnail_key)
);
CREATE INDEX idx_media_user ON media (user_id, created_at DESC);

CREATE TABLE posts (
    post_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    author_id     bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    media_id      bigint      NOT NULL REFERENCES media (media_id),
    caption       text        NOT NULL DEFAULT '',
    image_url     text        NOT NULL,
    thumbnail_url text        NOT NULL,
    like_count    integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- one post per uploaded image
    CONSTRAINT posts_media_id_key UNIQUE (media_id),
    CONSTRAINT posts_caption_length CHECK (char_length(caption) <= 2200),
    CONSTRAINT posts_like_count CHECK (like_count >= 0)
);
CREATE INDEX idx_posts_author_time ON posts (author_id, created_at DESC);
CREATE INDEX idx_posts_created ON posts (created_at DESC);

CREATE TABLE follows (
    follow_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    follower_id bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    followee_id bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT follows_follower_followee_key UNIQUE (follower_id, followee_id),
    CONSTRAINT follows_not_self CHECK (follower_id <> followee_id)
);
CREATE INDEX idx_follows_follower ON follows (follower_id);
CREATE INDEX idx_follows_followee ON follows (followee_id);

CREATE TABLE likes (
    user_id    bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    post_id    bigint      NOT NULL REFERENCES posts (post_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, post_id)
);
-- the primary key serves "has this user liked"; this one serves "who liked this post"
CREATE INDEX idx_likes_post ON likes (post_id);
