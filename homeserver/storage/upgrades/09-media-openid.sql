-- v8 -> v9: Media repository and OpenID tokens
-- One row per mxc:// URI. The content is a file in the media store named by
-- its SHA-256, so identical uploads share one file; the row is written only
-- once that file is in place. origin is the URI's server name: ours for
-- uploads (remote media cached over federation will sit beside them).
CREATE TABLE media (
	origin       TEXT   NOT NULL,
	media_id     TEXT   NOT NULL,
	-- Lowercase hex SHA-256 of the content.
	content_hash TEXT   NOT NULL,
	content_type TEXT   NOT NULL,
	-- The filename given at upload; NULL when none was.
	upload_name  TEXT,
	size         BIGINT NOT NULL,
	-- The uploader; NULL for remote media.
	user_id      TEXT,
	created_ts   BIGINT NOT NULL,
	PRIMARY KEY (origin, media_id)
);
-- A user's uploads (quotas, admin listings).
CREATE INDEX media_user_idx ON media (user_id, created_ts);
-- Which rows share a file (a file may be deleted once none refers to it).
CREATE INDEX media_content_hash_idx ON media (content_hash);

-- OpenID tokens (client-server "OpenID"): a user proves their identity to a
-- third party, which exchanges the token at the federation API's
-- /openid/userinfo. Stored as SHA-256 hex digests, in the database so every
-- homeserver process sharing it accepts them; expired rows are pruned when
-- new tokens are issued.
CREATE TABLE openid_tokens (
	token_hash TEXT   PRIMARY KEY,
	user_id    TEXT   NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expires_idx ON openid_tokens (expires_ts);
