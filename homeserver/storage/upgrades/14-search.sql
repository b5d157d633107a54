-- v13 -> v14: Full-text search over room events, and content reports
-- The text /search looks in, one row per searchable event (storage.SearchText:
-- content.body of m.room.message, content.name of m.room.name, content.topic
-- and the text/plain m.topic of m.room.topic). Written with the event and
-- deleted when it is redacted, in the same transaction. PostgreSQL searches
-- it through a generated tsvector and a GIN index; SQLite through an FTS5
-- index over this table (event_search_fts), which storage.Open creates and
-- fills when the binary has FTS5 (build tag sqlite_fts5), because an
-- upgrade cannot depend on how the binary was built.
CREATE TABLE event_search (
	-- only: postgres
	stream_pos BIGINT  PRIMARY KEY REFERENCES events(stream_pos),
	-- only: sqlite (line commented)
--	stream_pos INTEGER PRIMARY KEY REFERENCES events(stream_pos),
	-- The event's room, sender and type, so that a search filters without
	-- reading events (whose PDUs make each row costly to reach).
	room_id    TEXT    NOT NULL,
	sender     TEXT    NOT NULL,
	type       TEXT    NOT NULL,
	text       TEXT    NOT NULL
	-- only: postgres for next 2 lines
	,
	vector     tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED
);
-- only: postgres
CREATE INDEX event_search_vector_idx ON event_search USING GIN (vector);

-- The events of before this version. PDUs with a NUL escape are left out,
-- as SearchText leaves them out (PostgreSQL's jsonb cannot hold NUL).
-- only: postgres until "end only"
INSERT INTO event_search (stream_pos, room_id, sender, type, text)
SELECT stream_pos, room_id, sender, type, text FROM (
	SELECT stream_pos, room_id, sender, type, CASE
		WHEN type = 'm.room.message' THEN
			CASE WHEN jsonb_typeof(j->'content'->'body') = 'string' THEN j->'content'->>'body' END
		WHEN type = 'm.room.name' THEN
			CASE WHEN jsonb_typeof(j->'content'->'name') = 'string' THEN j->'content'->>'name' END
		ELSE concat_ws(E'\n',
			CASE WHEN jsonb_typeof(j->'content'->'topic') = 'string' THEN NULLIF(j->'content'->>'topic', '') END,
			(SELECT string_agg(el->>'body', E'\n' ORDER BY ord) FROM jsonb_array_elements(
				CASE WHEN jsonb_typeof(j->'content'->'m.topic'->'m.text') = 'array'
					THEN j->'content'->'m.topic'->'m.text' ELSE '[]'::jsonb END) WITH ORDINALITY AS t(el, ord)
			WHERE jsonb_typeof(el) = 'object' AND jsonb_typeof(el->'body') = 'string' AND el->>'body' <> ''
				AND (el->'mimetype' IS NULL OR jsonb_typeof(el->'mimetype') = 'null' OR el->'mimetype' = '"text/plain"'::jsonb)
				AND el->>'body' IS DISTINCT FROM (CASE WHEN jsonb_typeof(j->'content'->'topic') = 'string' THEN j->'content'->>'topic' END)))
		END AS text
	FROM (SELECT stream_pos, room_id, sender, type, pdu::jsonb AS j FROM events
		WHERE ((type = 'm.room.message' AND state_key IS NULL) OR (type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
			AND redacted_by IS NULL AND strpos(pdu, '\u0000') = 0) AS e
) AS s WHERE text IS NOT NULL AND text <> '';
-- end only postgres
-- only: sqlite until "end only"
INSERT INTO event_search (stream_pos, room_id, sender, type, text)
SELECT stream_pos, room_id, sender, type, text FROM (
	SELECT stream_pos, room_id, sender, type, CASE
		WHEN type = 'm.room.message' THEN
			CASE WHEN json_type(pdu, '$.content.body') = 'text' THEN json_extract(pdu, '$.content.body') END
		WHEN type = 'm.room.name' THEN
			CASE WHEN json_type(pdu, '$.content.name') = 'text' THEN json_extract(pdu, '$.content.name') END
		ELSE (SELECT group_concat(part, char(10) ORDER BY ord) FROM (
			SELECT 0 AS ord, json_extract(pdu, '$.content.topic') AS part
			WHERE json_type(pdu, '$.content.topic') = 'text' AND json_extract(pdu, '$.content.topic') <> ''
			UNION ALL
			SELECT 1 + CAST(m.key AS INTEGER), json_extract(m.value, '$.body')
			FROM json_each(pdu, '$.content."m.topic"."m.text"') AS m
			WHERE json_type(pdu, '$.content."m.topic"."m.text"') = 'array' AND m.type = 'object'
				AND json_type(m.value, '$.body') = 'text' AND json_extract(m.value, '$.body') <> ''
				AND coalesce(json_type(m.value, '$.mimetype'), 'null') IN ('null', 'text')
				AND coalesce(json_extract(m.value, '$.mimetype'), 'text/plain') = 'text/plain'
				AND json_extract(m.value, '$.body') IS NOT (CASE WHEN json_type(pdu, '$.content.topic') = 'text'
					THEN json_extract(pdu, '$.content.topic') END)))
		END AS text
	FROM events
	WHERE ((type = 'm.room.message' AND state_key IS NULL) OR (type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
		AND redacted_by IS NULL AND instr(pdu, '\u0000') = 0
) WHERE text IS NOT NULL AND text <> '';
-- end only sqlite

-- Searching many rooms reads the history_visibility changes of each
-- (rooms.HistoriesFor); a partial index keeps that off the message rows.
CREATE INDEX events_state_type_idx ON events (type, state_key, room_id, stream_pos) WHERE state_key IS NOT NULL;

-- Content reports (spec: "Reporting Content"): of an event, a room or a
-- user, for the server admins (/_synapse/admin/v1/event_reports and the
-- like).
CREATE TABLE content_reports (
	-- only: postgres
	id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	-- only: sqlite (line commented)
--	id          INTEGER PRIMARY KEY,
	-- 'event', 'room' or 'user'.
	kind        TEXT    NOT NULL,
	reporter    TEXT    NOT NULL,
	-- Set for event and room reports.
	room_id     TEXT,
	-- Set for event reports.
	event_id    TEXT,
	-- The reported user, or the sender of the reported event.
	user_id     TEXT,
	-- NULL when an event report gave none (room and user reports must).
	reason      TEXT,
	-- -100 (most offensive) to 0, sent by clients of spec versions before
	-- v1.18 with event reports; NULL otherwise.
	score       INTEGER,
	received_ts BIGINT  NOT NULL
);
CREATE INDEX content_reports_kind_idx ON content_reports (kind, id);
