-- v14 -> v15: Push rules, notifications and pushers
-- A user's push rules as far as they differ from the server defaults
-- (push/defaults.json, which are not stored: a new server version's
-- defaults apply to everyone at once). Two sorts of rows:
--  * user-defined rules (rule_id not starting with '.'): the whole rule;
--    position orders the user's rules of one kind (ascending = checked
--    first); conditions (override/underride) and pattern (content) as given;
--  * server-default rules (rule_id starting with '.'): only what the user
--    changed; a NULL enabled or actions means the default's.
CREATE TABLE push_rules (
	user_id    TEXT    NOT NULL,
	kind       TEXT    NOT NULL,
	rule_id    TEXT    NOT NULL,
	position   INTEGER NOT NULL,
	-- JSON array.
	conditions TEXT,
	pattern    TEXT,
	-- JSON array.
	actions    TEXT,
	enabled    BOOLEAN,
	PRIMARY KEY (user_id, kind, rule_id)
);

-- The stream position of each user's latest push rule change (the same
-- write puts the whole ruleset into the m.push_rules account data, which
-- is how /sync tells clients). Caches of compiled rules follow this table.
CREATE TABLE push_rules_stream (
	user_id    TEXT   PRIMARY KEY,
	stream_pos BIGINT NOT NULL
);
CREATE INDEX push_rules_stream_pos_idx ON push_rules_stream (stream_pos);

-- The notifications each local user got: one row per (user, event) whose
-- push rules said "notify", written when the push worker evaluates the
-- event. GET /notifications pages through them (newest first, by the
-- event's stream position); whether one is read is decided when it is
-- read out, from the user's receipts, so it is never stale. Rows older
-- than 30 days are pruned.
CREATE TABLE push_notifications (
	user_id    TEXT    NOT NULL,
	stream_pos BIGINT  NOT NULL,
	room_id    TEXT    NOT NULL,
	event_id   TEXT    NOT NULL,
	-- 'main' or the thread root's event ID (threaded read receipts).
	thread_id  TEXT    NOT NULL,
	event_type TEXT    NOT NULL,
	-- The matching rule's actions (JSON array).
	actions    TEXT    NOT NULL,
	highlight  BOOLEAN NOT NULL,
	ts         BIGINT  NOT NULL,
	PRIMARY KEY (user_id, stream_pos)
-- only: postgres
);
-- A thousand rows per message in a big room: on SQLite, store them in the
-- primary key's B-tree rather than in a rowid table plus an index.
-- only: sqlite (line commented)
--) WITHOUT ROWID;
CREATE INDEX push_notifications_ts_idx ON push_notifications (ts);

-- HTTP pushers (POST /pushers/set). Delivery follows push_notifications:
-- everything of the user's after last_pos is still to be sent (or given
-- up on), so delivery resumes where it stopped after a restart.
CREATE TABLE pushers (
	user_id             TEXT   NOT NULL,
	app_id              TEXT   NOT NULL,
	pushkey             TEXT   NOT NULL,
	kind                TEXT   NOT NULL,
	app_display_name    TEXT   NOT NULL,
	device_display_name TEXT   NOT NULL,
	-- NULL when none was given.
	profile_tag         TEXT,
	lang                TEXT   NOT NULL,
	-- The data object as given (JSON).
	data                TEXT   NOT NULL,
	-- The device whose access token set the pusher: logging it out (deleting
	-- the device) deletes the pusher. NULL for appservice sessions.
	device_id           TEXT,
	-- Unix seconds of the last /pushers/set of this pusher.
	pushkey_ts          BIGINT NOT NULL,
	last_pos            BIGINT NOT NULL,
	PRIMARY KEY (user_id, app_id, pushkey),
	FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX pushers_key_idx ON pushers (app_id, pushkey);

-- The push worker's place in the event stream: every event up to
-- evaluated_pos has had its notifications written. Events before this
-- upgrade are not evaluated. With several homeserver processes on one
-- PostgreSQL database, one holds the lease and does the work.
CREATE TABLE push_worker (
	id            INTEGER PRIMARY KEY CHECK (id = 1),
	evaluated_pos BIGINT  NOT NULL,
	lease_owner   TEXT,
	lease_until   BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO push_worker (id, evaluated_pos) SELECT 1, pos FROM stream_counter;
