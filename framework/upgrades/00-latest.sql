-- v0 -> v1: Appservice runtime: received transactions, pending events, ghosts, bot state
-- Transactions already accepted from the homeserver, by txnId: a resent
-- transaction (the homeserver missed our answer) is acknowledged without
-- being processed again, across restarts too. Pruned after a week.
CREATE TABLE framework_txns (
	txn_id      TEXT   PRIMARY KEY,
	received_at BIGINT NOT NULL
);

-- Events accepted but not yet processed: written with their transaction
-- before the homeserver gets its 200, deleted once handled, so a restart
-- resumes where processing stopped. seq orders them as received.
CREATE TABLE framework_inbox (
	seq     BIGINT   PRIMARY KEY,
	room_id TEXT     NOT NULL, -- '' for presence and to-device messages
	kind    SMALLINT NOT NULL, -- 0 timeline/state, 1 ephemeral, 2 to-device
	event   TEXT     NOT NULL  -- the event JSON as received
);

-- The profile each ghost was last given, so it is set only when it changes.
CREATE TABLE framework_ghosts (
	user_id       TEXT PRIMARY KEY,
	displayname   TEXT NOT NULL DEFAULT '',
	avatar_url    TEXT NOT NULL DEFAULT '',
	-- Where the avatar came from (a remote URL), so it is uploaded once.
	avatar_source TEXT NOT NULL DEFAULT ''
);

-- Small persistent state of bots and bridges, by scope ("room:!id",
-- "user:@id", "bot") and key.
CREATE TABLE framework_kv (
	scope TEXT NOT NULL,
	key   TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (scope, key)
);
