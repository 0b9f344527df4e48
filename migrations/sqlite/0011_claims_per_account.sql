-- The due messages of one account, oldest first: a claim finds each account's oldest due
-- message, and takes that account's next few, without walking the whole queue (one account's
-- backlog must not hide another's due messages, nor make every claim slow).
CREATE INDEX messages_due_by_account ON messages (account_id, next_attempt_time)
    WHERE state IN ('queued', 'deferred');
-- The agent that reported DATA started for a message's current attempt through a network
-- connector (cleared by each claim): if the replica that follows the attempt dies, the agent
-- may still hand the message to the relay, so another replica defers it (CONNECTOR_LOST)
-- instead of sending it again.
ALTER TABLE messages ADD COLUMN data_agent TEXT;
