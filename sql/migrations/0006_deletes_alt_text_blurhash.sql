-- Alt text is the image's description for screen readers; the caption is the author's words.
ALTER TABLE posts ADD COLUMN alt_text text NOT NULL DEFAULT '';
ALTER TABLE posts ADD CONSTRAINT posts_alt_text_length CHECK (char_length(alt_text) <= 1500);

-- A placeholder painted while the image loads, and the thumbnail's own size. Media stored
-- before this migration have neither (NULL): their bytes were never read again to compute them.
ALTER TABLE media ADD COLUMN blurhash text;
ALTER TABLE media ADD COLUMN thumbnail_width integer;
ALTER TABLE media ADD COLUMN thumbnail_height integer;
ALTER TABLE media ADD CONSTRAINT media_thumbnail_dimensions
    CHECK (thumbnail_width > 0 AND thumbnail_height > 0);

-- Objects whose rows are deleted and which S3 has not confirmed deleting yet. A delete writes
-- these in the transaction that removes the rows, so no row ever names a missing object and
-- no object is forgotten: the service deletes them after the commit, and a scheduled retry
-- deletes whatever S3 refused then.
CREATE TABLE object_deletions (
    object_key text        PRIMARY KEY,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    attempts   integer     NOT NULL DEFAULT 0
);
CREATE INDEX idx_object_deletions_queued ON object_deletions (queued_at);

-- What an account deleted, so that deleting it again answers 204 and not 404. Gone with the
-- account.
CREATE TABLE tombstones (
    kind       text        NOT NULL,
    id         bigint      NOT NULL,
    owner_id   bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, id),
    CONSTRAINT tombstones_kind CHECK (kind IN ('post', 'media'))
);
CREATE INDEX idx_tombstones_owner ON tombstones (owner_id);
