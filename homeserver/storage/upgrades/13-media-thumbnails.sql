-- v12 -> v13: Media thumbnails, upload quotas, asynchronous uploads, URL previews
-- Thumbnails are generated on demand, once per source content and size: a
-- row per (the source file's SHA-256, the configured size and method). The
-- thumbnail itself is a file in the media store named by its own SHA-256.
CREATE TABLE media_thumbnails (
	source_hash  TEXT    NOT NULL,
	width        INTEGER NOT NULL,
	height       INTEGER NOT NULL,
	method       TEXT    NOT NULL,
	content_hash TEXT    NOT NULL,
	content_type TEXT    NOT NULL,
	size         BIGINT  NOT NULL,
	created_ts   BIGINT  NOT NULL,
	PRIMARY KEY (source_hash, width, height, method)
);

-- Bytes each user has uploaded (media.user_quota), kept in step with the
-- media rows in the same transaction; an upload that would exceed the quota
-- fails its conditional update.
CREATE TABLE media_usage (
	user_id TEXT   PRIMARY KEY,
	bytes   BIGINT NOT NULL
);
INSERT INTO media_usage (user_id, bytes)
	SELECT user_id, SUM(size) FROM media WHERE user_id IS NOT NULL GROUP BY user_id;

-- Media IDs reserved with POST /_matrix/media/v1/create whose content has
-- not been uploaded. The upload deletes the row and inserts the media row
-- in one transaction, so an ID is in at most one of the two tables.
CREATE TABLE media_pending (
	origin     TEXT   NOT NULL,
	media_id   TEXT   NOT NULL,
	user_id    TEXT   NOT NULL,
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_pending_user_idx ON media_pending (user_id, expires_ts);
CREATE INDEX media_pending_expires_idx ON media_pending (expires_ts);

-- URL previews (GET /_matrix/client/v1/media/preview_url), cached per URL
-- until expires_ts: the response JSON as served.
CREATE TABLE media_url_previews (
	url        TEXT   PRIMARY KEY,
	response   TEXT   NOT NULL,
	fetched_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX media_url_previews_expires_idx ON media_url_previews (expires_ts);
