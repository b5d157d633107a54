-- v0 -> v1: Bridge: portals, message map, reactions, users and logins
-- A portal is a remote channel and the Matrix room it is bridged to.
-- room_id is NULL while the channel has no room (known, not bridged).
CREATE TABLE bridge_portals (
	portal_id  TEXT    PRIMARY KEY,
	room_id    TEXT    UNIQUE,
	name       TEXT    NOT NULL DEFAULT '',
	topic      TEXT    NOT NULL DEFAULT '',
	-- linked: an existing room linked by a user (the bridge did not create
	-- it, so unlinking leaves it); otherwise the bridge created the room.
	linked     BOOLEAN NOT NULL DEFAULT false,
	-- relay: messages of Matrix users without a remote login are sent by
	-- the bridge's own remote account as "name: text".
	relay      BOOLEAN NOT NULL DEFAULT false,
	-- dm_user: for a direct chat with a remote user, the Matrix user.
	dm_user    TEXT    NOT NULL DEFAULT '',
	created_by TEXT    NOT NULL DEFAULT '',
	created_at BIGINT  NOT NULL
);

-- The message map: a remote message and the Matrix event that shows it (or
-- that it was sent from), for replies, edits, reactions and redactions.
-- One Matrix event may map to several remote messages (a long message
-- split in lines); each remote message maps to one event.
CREATE TABLE bridge_messages (
	portal_id TEXT   NOT NULL,
	remote_id TEXT   NOT NULL,
	event_id  TEXT   NOT NULL,
	room_id   TEXT   NOT NULL,
	-- sender: the Matrix user ID that sent the event (a ghost for remote
	-- messages).
	sender    TEXT   NOT NULL,
	ts        BIGINT NOT NULL,
	PRIMARY KEY (portal_id, remote_id)
);
CREATE INDEX bridge_messages_event_idx ON bridge_messages (event_id);

-- Reactions bridged either way, so that removing one on one side removes
-- it on the other.
CREATE TABLE bridge_reactions (
	portal_id TEXT NOT NULL,
	target_id TEXT NOT NULL, -- remote ID of the message reacted to
	sender    TEXT NOT NULL, -- Matrix user ID (a ghost for remote reactions)
	key       TEXT NOT NULL,
	event_id  TEXT NOT NULL,
	remote_id TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (portal_id, target_id, sender, key)
);
CREATE INDEX bridge_reactions_event_idx ON bridge_reactions (event_id);

-- Matrix users who talked to the bridge: their management room (a direct
-- chat with the bridge bot).
CREATE TABLE bridge_users (
	user_id         TEXT PRIMARY KEY,
	management_room TEXT NOT NULL DEFAULT ''
);

-- Remote logins of Matrix users (puppeting). data is the network's JSON
-- (credentials, session); it never leaves the bridge's database.
CREATE TABLE bridge_logins (
	user_id     TEXT   NOT NULL,
	login_id    TEXT   NOT NULL,
	remote_name TEXT   NOT NULL DEFAULT '',
	data        TEXT   NOT NULL DEFAULT '{}',
	created_at  BIGINT NOT NULL,
	PRIMARY KEY (user_id, login_id)
);
