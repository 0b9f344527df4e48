-- The messages waiting for delivery, by account: the queue summaries (ListQueueSummaries)
-- count them without walking every message an account ever sent.
CREATE INDEX messages_waiting ON messages (account_id, state, create_time)
    WHERE state IN ('queued', 'sending', 'deferred');
