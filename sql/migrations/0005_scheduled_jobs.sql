-- When each scheduled job (the orphan sweep, the unposted-media sweep) last started. Every service
-- process wakes up on the schedule; the one whose update wins runs the job, the others skip it.
CREATE TABLE scheduled_jobs (
    name         text        PRIMARY KEY,
    last_started timestamptz NOT NULL
);

-- Unposted media are found by age among the rows no post refers to.
CREATE INDEX idx_media_created ON media (created_at);
