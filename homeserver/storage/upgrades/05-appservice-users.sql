-- v4 -> v5: Remember which appservice registered a user
-- NULL for ordinary users. An appservice's ghosts may sit in its exclusive
-- namespace; any other user there is a configuration error.
ALTER TABLE users ADD COLUMN appservice_id TEXT;
