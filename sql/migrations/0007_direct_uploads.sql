-- V1 uploads: the client sends the bytes straight to S3 with a presigned POST, then asks the
-- service to complete the upload; a media worker processes it off the request path.

-- One presigned upload: the private key it may write, what the client declared, and until when.
-- Once completed it names its media row; completing again answers with that row.
CREATE TABLE direct_uploads (
    upload_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    object_key     text        NOT NULL,
    content_type   text        NOT NULL,
    declared_bytes bigint      NOT NULL,
    expires_at     timestamptz NOT NULL,
    media_id       bigint      REFERENCES media (media_id) ON DELETE SET NULL,
    completed_at   timestamptz,
    -- Expired and never completed: what was sent is deleted, and completing it is 410.
    abandoned_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT direct_uploads_object_key_key UNIQUE (object_key),
    CONSTRAINT direct_uploads_content_type
        CHECK (content_type IN ('image/jpeg', 'image/png', 'image/heic')),
    CONSTRAINT direct_uploads_declared_bytes CHECK (declared_bytes > 0)
);
CREATE INDEX idx_direct_uploads_user ON direct_uploads (user_id);
-- What the sweep of abandoned uploads walks: the ones never completed, oldest first.
CREATE INDEX idx_direct_uploads_pending ON direct_uploads (expires_at)
    WHERE completed_at IS NULL AND abandoned_at IS NULL;

-- A V0 upload is ready when its row is written. A V1 upload's row is written at complete, in
-- state 'processing', with the keys its objects will have; the worker stores them and marks it
-- 'ready', or 'failed' with a reason. Only ready media can be posted or are ever shown.
ALTER TABLE media ADD COLUMN status text NOT NULL DEFAULT 'ready';
ALTER TABLE media ADD CONSTRAINT media_status CHECK (status IN ('processing', 'ready', 'failed'));
ALTER TABLE media ADD COLUMN failure text;
-- The object the client uploaded, under incoming/, until the worker has processed it.
ALTER TABLE media ADD COLUMN incoming_key text;
-- The 600 and 1080 px renditions a V1 worker writes: [{"width", "height", "key"}, ...].
ALTER TABLE media ADD COLUMN renditions jsonb NOT NULL DEFAULT '[]';
-- When the job was last put on the queue (the stuck-job sweep sends it again after a while),
-- how many times, and when the upload was completed and made ready.
ALTER TABLE media ADD COLUMN enqueued_at timestamptz;
ALTER TABLE media ADD COLUMN enqueues integer NOT NULL DEFAULT 0;
ALTER TABLE media ADD COLUMN completed_at timestamptz;
ALTER TABLE media ADD COLUMN ready_at timestamptz;
CREATE INDEX idx_media_processing ON media (enqueued_at) WHERE status = 'processing';

-- Every object key a media row names, for the queries that delete rows and queue their objects
-- (sql/queries/deletes.sql, sweeps.sql) and for the orphan sweep: one list, kept here.
CREATE FUNCTION media_object_keys(
    original_key text, thumbnail_key text, source_key text, incoming_key text, renditions jsonb
) RETURNS SETOF text LANGUAGE sql IMMUTABLE AS $$
    SELECT key FROM (VALUES (original_key), (thumbnail_key), (source_key), (incoming_key)) k (key)
    WHERE key IS NOT NULL
    UNION ALL
    SELECT r ->> 'key' FROM jsonb_array_elements(renditions) r
$$;
