-- The replica that claimed a message (SENDING), so that another can queue it again as soon as
-- that replica's heartbeat stops.
ALTER TABLE messages ADD COLUMN claimed_by TEXT;
