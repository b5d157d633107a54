-- v7 -> v8: Ephemeral data and to-device messages in appservice transactions
-- The in-flight transaction's receipts, presence, typing and to-device
-- messages, exactly as first sent (a JSON object), so that a retry resends
-- the same body: receipts and presence are overwritten in place and typing
-- lives in memory, so they could not be read again unchanged.
ALTER TABLE appservice_streams ADD COLUMN txn_ephemeral TEXT;
-- Appservice pushers read receipts across all rooms by stream position.
CREATE INDEX receipts_pos_idx ON receipts (stream_pos);
