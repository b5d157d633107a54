-- v2 -> v3: Index for the public room directory
CREATE INDEX rooms_public_idx ON rooms (room_id) WHERE is_public;
