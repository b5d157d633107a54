-- v5 -> v6: Appservice transaction queues
-- One row per appservice that receives transactions: the row is its queue.
-- Everything in the event stream after acked_pos that the appservice is
-- interested in is still to be sent; a transaction being sent is recorded
-- (txn_upto, txn_events) before the request goes out, so after a crash or a
-- failed request exactly the same events are resent under the same txn_id.
CREATE TABLE appservice_streams (
	as_id           TEXT    PRIMARY KEY,
	-- Stream position up to which the appservice has everything it is
	-- interested in (acknowledged, or skipped as uninteresting).
	acked_pos       BIGINT  NOT NULL,
	-- The transaction in flight when txn_upto is set, else the next one.
	txn_id          BIGINT  NOT NULL,
	-- The in-flight transaction: acked_pos becomes txn_upto once the
	-- appservice answers 2xx; txn_events lists the stream positions of its
	-- events (a JSON array), fixed when the transaction was first built.
	txn_upto        BIGINT,
	txn_events      TEXT,
	last_success_ts BIGINT,
	-- Consecutive failed attempts, and since when (NULL while it succeeds).
	failures        INTEGER NOT NULL DEFAULT 0,
	down_since_ts   BIGINT,
	last_error      TEXT,
	-- Which homeserver process pushes to this appservice, until when. With
	-- several processes on one PostgreSQL database one of them holds the
	-- lease and the others stand by; every write checks lease_owner.
	lease_owner     TEXT,
	lease_until     BIGINT  NOT NULL DEFAULT 0
);
