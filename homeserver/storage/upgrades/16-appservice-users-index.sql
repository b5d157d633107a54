-- v15 -> v16: Index users by the appservice that registered them (MSC3202 key counts)
CREATE INDEX users_appservice_idx ON users (appservice_id) WHERE appservice_id IS NOT NULL;
