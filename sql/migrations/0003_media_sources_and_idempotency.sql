-- A HEIC upload is kept as sent under a private key; the public original is a JPEG rendition.
ALTER TABLE media ADD COLUMN source_key text;
ALTER TABLE media ADD CONSTRAINT media_source_key_key UNIQUE (source_key);

-- Idempotency-Key records: a retried upload returns the first one's answer.
-- A row without a response is a claim: that upload is still being processed.
CREATE TABLE upload_idempotency (
    user_id         bigint      NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    idempotency_key text        NOT NULL,
    body_sha256     bytea       NOT NULL,
    media_id        bigint      REFERENCES media (media_id) ON DELETE CASCADE,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key),
    CONSTRAINT upload_idempotency_key_length CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    CONSTRAINT upload_idempotency_complete CHECK ((media_id IS NULL) = (response IS NULL))
);
