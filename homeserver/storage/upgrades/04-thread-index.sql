-- v3 -> v4: Index thread events per room for /threads
CREATE INDEX events_room_threads_idx ON events (room_id, depth, stream_pos) WHERE rel_type = 'm.thread';
