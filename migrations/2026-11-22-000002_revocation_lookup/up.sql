-- A replica that cannot prove its in-process view is current checks each credential here.
CREATE INDEX revocations_subject ON revocations (kind, subject_id);
-- Every replica re-reads the most recent revocations each second, as a safety net under the feed.
CREATE INDEX revocations_recent ON revocations (created_at);
