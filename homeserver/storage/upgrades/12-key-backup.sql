-- v11 -> v12: Server-side key backups
-- One row per backup version a user created. Versions count up per user
-- and are never reused: a deleted version keeps its row (deleted = true)
-- so that deleting it again succeeds, as the spec asks, and so that a
-- client holding the old version number can never write into a new backup.
-- etag counts the changes to the version's keys; the API serves it as the
-- backup's opaque etag.
CREATE TABLE key_backup_versions (
	user_id   TEXT    NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
	version   BIGINT  NOT NULL,
	algorithm TEXT    NOT NULL,
	-- The algorithm-dependent auth_data object (compact JSON).
	auth_data TEXT    NOT NULL,
	etag      BIGINT  NOT NULL DEFAULT 0,
	deleted   BOOLEAN NOT NULL DEFAULT false,
	PRIMARY KEY (user_id, version)
);

-- The backed-up room keys, one per megolm session in a version. The server
-- cannot read session_data (encrypted to the backup's key); it keeps the
-- metadata in the clear to choose between two uploads of one session.
CREATE TABLE key_backup_sessions (
	user_id             TEXT    NOT NULL,
	version             BIGINT  NOT NULL,
	room_id             TEXT    NOT NULL,
	session_id          TEXT    NOT NULL,
	first_message_index BIGINT  NOT NULL,
	forwarded_count     BIGINT  NOT NULL,
	is_verified         BOOLEAN NOT NULL,
	-- The algorithm-dependent session_data object (compact JSON).
	session_data        TEXT    NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id),
	FOREIGN KEY (user_id, version) REFERENCES key_backup_versions (user_id, version) ON DELETE CASCADE
);
