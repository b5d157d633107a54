-- v9 -> v10: The state event each state event replaced
-- For unsigned.replaces_state and unsigned.prev_content, which clients
-- read to tell a join from a profile change, an unban from a leave.
-- NULL for message events, the first state of a key, and events stored
-- before this version.
ALTER TABLE events ADD COLUMN replaces_state TEXT;
