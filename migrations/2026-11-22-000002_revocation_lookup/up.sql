-- A replica that cannot prove its in-process view is current checks each credential here.
CREATE INDEX revocations_subject ON revocations (kind, subject_id);
