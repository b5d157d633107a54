package storage

// Appservice transaction queues (table appservice_streams, see
// upgrades/06-appservice-streams.sql) and the reads the pusher needs: the
// event stream across rooms and a room's canonical aliases.
//
// Every write but EnsureAppserviceStream names the lease owner and changes
// nothing (returning ok=false) when another process has claimed the row
// since: a pusher that lost its lease can never move a queue it no longer
// owns.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// AppserviceStream is one appservice's queue row.
type AppserviceStream struct {
	ASID     string
	AckedPos int64
	// TxnID is the in-flight transaction's ID when TxnUpto is set, else the
	// ID the next transaction will get.
	TxnID int64
	// Sending is true while a transaction is recorded as being sent: its
	// range ends at TxnUpto, TxnEvents are the stream positions of its
	// events and TxnEphemeral its other data as first sent (nil: none).
	Sending       bool
	TxnUpto       int64
	TxnEvents     []int64
	TxnEphemeral  json.RawMessage
	LastSuccessTS int64 // 0: never
	Failures      int
	DownSinceTS   int64 // 0: not failing
	LastError     string
	LeaseOwner    string
	LeaseUntil    int64
}

// InFlight reports whether a transaction is recorded as being sent.
func (s *AppserviceStream) InFlight() bool { return s.Sending }

const appserviceStreamColumns = `as_id, acked_pos, txn_id, txn_upto, txn_events, txn_ephemeral, last_success_ts, failures,
	down_since_ts, last_error, lease_owner, lease_until`

func scanAppserviceStream(row interface{ Scan(...any) error }) (*AppserviceStream, error) {
	var s AppserviceStream
	var upto, lastSuccess, downSince sql.NullInt64
	var txnEvents, txnEphemeral, lastError, owner sql.NullString
	if err := row.Scan(&s.ASID, &s.AckedPos, &s.TxnID, &upto, &txnEvents, &txnEphemeral, &lastSuccess, &s.Failures,
		&downSince, &lastError, &owner, &s.LeaseUntil); err != nil {
		return nil, err
	}
	s.Sending = upto.Valid
	s.TxnUpto, s.LastSuccessTS, s.DownSinceTS = upto.Int64, lastSuccess.Int64, downSince.Int64
	if txnEphemeral.Valid && txnEphemeral.String != "" {
		s.TxnEphemeral = json.RawMessage(txnEphemeral.String)
	}
	s.LastError, s.LeaseOwner = lastError.String, owner.String
	if txnEvents.Valid && txnEvents.String != "" {
		if err := json.Unmarshal([]byte(txnEvents.String), &s.TxnEvents); err != nil {
			return nil, fmt.Errorf("appservice %s: txn_events: %w", s.ASID, err)
		}
	}
	return &s, nil
}

// EnsureAppserviceStream creates the queue row of an appservice that has
// none, starting at startPos (so a new appservice receives what happens from
// then on, not the history before it). An existing row is left alone.
func (db *DB) EnsureAppserviceStream(ctx context.Context, asID string, startPos int64) (created bool, err error) {
	res, err := db.Exec(ctx, `INSERT INTO appservice_streams (as_id, acked_pos, txn_id) VALUES ($1, $2, 1)
		ON CONFLICT (as_id) DO NOTHING`, asID, startPos)
	if err != nil {
		return false, fmt.Errorf("create appservice stream: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// GetAppserviceStream returns an appservice's queue row, or ErrNotFound.
func (db *DB) GetAppserviceStream(ctx context.Context, asID string) (*AppserviceStream, error) {
	s, err := scanAppserviceStream(db.QueryRow(ctx, `SELECT `+appserviceStreamColumns+` FROM appservice_streams WHERE as_id = $1`, asID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get appservice stream: %w", err)
	}
	return s, nil
}

// AppserviceStreams returns every queue row, by appservice ID (rows of
// appservices no longer registered included).
func (db *DB) AppserviceStreams(ctx context.Context) ([]*AppserviceStream, error) {
	rows, err := db.Query(ctx, `SELECT `+appserviceStreamColumns+` FROM appservice_streams ORDER BY as_id`)
	if err != nil {
		return nil, fmt.Errorf("list appservice streams: %w", err)
	}
	defer rows.Close()
	var out []*AppserviceStream
	for rows.Next() {
		s, err := scanAppserviceStream(rows)
		if err != nil {
			return nil, fmt.Errorf("scan appservice stream: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// ClaimAppserviceStream takes or renews the lease on a queue: it succeeds
// when the row is unowned, owned by owner, or its lease ended before now.
func (db *DB) ClaimAppserviceStream(ctx context.Context, asID, owner string, now, until int64) (bool, error) {
	return db.affectsOne(ctx, "claim appservice stream", `UPDATE appservice_streams SET lease_owner = $2, lease_until = $4
		WHERE as_id = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $3)`, asID, owner, now, until)
}

// ReleaseAppserviceStream gives up owner's lease so another process (or the
// next start of this one) may take over at once.
func (db *DB) ReleaseAppserviceStream(ctx context.Context, asID, owner string) error {
	_, err := db.Exec(ctx, `UPDATE appservice_streams SET lease_owner = NULL, lease_until = 0 WHERE as_id = $1 AND lease_owner = $2`, asID, owner)
	if err != nil {
		return fmt.Errorf("release appservice stream: %w", err)
	}
	return nil
}

// ClearAppserviceLeases releases every queue (at the start of the only
// process using an SQLite database, whose predecessor may have crashed).
func (db *DB) ClearAppserviceLeases(ctx context.Context) error {
	if _, err := db.Exec(ctx, `UPDATE appservice_streams SET lease_owner = NULL, lease_until = 0`); err != nil {
		return fmt.Errorf("clear appservice leases: %w", err)
	}
	return nil
}

// SkipAppserviceStream moves acked_pos forward over events the appservice
// is not interested in. It never moves it back, nor while a transaction is
// in flight.
func (db *DB) SkipAppserviceStream(ctx context.Context, asID, owner string, ackedPos int64) (bool, error) {
	return db.affectsOne(ctx, "advance appservice stream", `UPDATE appservice_streams SET acked_pos = $3
		WHERE as_id = $1 AND lease_owner = $2 AND txn_upto IS NULL AND acked_pos <= $3`, asID, owner, ackedPos)
}

// StartAppserviceTxn records the transaction about to be sent: events (the
// stream positions, in order) after ackedPos up to upto and the ephemeral
// part (may be nil), under the row's current txn_id. ackedPos may be ahead
// of the stored acked_pos when the events in between were skipped as
// uninteresting; upto equals ackedPos for a transaction of typing only.
func (db *DB) StartAppserviceTxn(ctx context.Context, asID, owner string, ackedPos, upto int64, events []int64, ephemeral json.RawMessage) (bool, error) {
	if upto < ackedPos || (len(events) == 0 && len(ephemeral) == 0) {
		return false, fmt.Errorf("start appservice transaction: empty range (%d, %d] or nothing to send", ackedPos, upto)
	}
	list, _ := json.Marshal(events)
	var eph sql.NullString
	if len(ephemeral) > 0 {
		eph = sql.NullString{String: string(ephemeral), Valid: true}
	}
	return db.affectsOne(ctx, "start appservice transaction", `UPDATE appservice_streams
		SET acked_pos = $3, txn_upto = $4, txn_events = $5, txn_ephemeral = $6
		WHERE as_id = $1 AND lease_owner = $2 AND txn_upto IS NULL AND acked_pos <= $3`, asID, owner, ackedPos, upto, string(list), eph)
}

// AckAppserviceTxn marks transaction txnID as delivered: acked_pos becomes
// its upto, the next transaction gets txnID+1, the failure count resets,
// and the to-device messages it carried (stream positions toDevice) are
// deleted: the appservice now holds them for its users' devices.
func (db *DB) AckAppserviceTxn(ctx context.Context, asID, owner string, txnID, now int64, toDevice []int64) (ok bool, err error) {
	err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
		ok, err = db.affectsOne(ctx, "acknowledge appservice transaction", `UPDATE appservice_streams
			SET acked_pos = txn_upto, txn_id = txn_id + 1, txn_upto = NULL, txn_events = NULL, txn_ephemeral = NULL,
				last_success_ts = $4, failures = 0, down_since_ts = NULL, last_error = NULL
			WHERE as_id = $1 AND lease_owner = $2 AND txn_id = $3 AND txn_upto IS NOT NULL`, asID, owner, txnID, now)
		if err != nil || !ok || len(toDevice) == 0 {
			return err
		}
		in, args := inList(toDevice, 0)
		if _, err := db.Exec(ctx, `DELETE FROM to_device WHERE stream_pos IN (`+in+`)`, args...); err != nil {
			return fmt.Errorf("delete delivered to-device messages: %w", err)
		}
		return nil
	})
	return ok, err
}

// AppserviceTxnFailed counts a failed attempt (down_since_ts is kept from
// the first failure in a row). errMsg must not contain secrets.
func (db *DB) AppserviceTxnFailed(ctx context.Context, asID, owner string, now int64, errMsg string) (bool, error) {
	return db.affectsOne(ctx, "record appservice failure", `UPDATE appservice_streams
		SET failures = failures + 1, down_since_ts = COALESCE(down_since_ts, $3), last_error = $4
		WHERE as_id = $1 AND lease_owner = $2`, asID, owner, now, errMsg)
}

func (db *DB) affectsOne(ctx context.Context, what, query string, args ...any) (bool, error) {
	res, err := db.Exec(ctx, query, args...)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	return n == 1, nil
}

// StreamEvents returns up to limit events of every room with stream
// positions in (after, upto], oldest first.
func (db *DB) StreamEvents(ctx context.Context, after, upto int64, limit int) ([]*Event, error) {
	return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos LIMIT $3`, after, upto, limit)
}

// EventsAtStreamPositions returns the events at the given stream positions,
// oldest first (positions without an event are left out).
func (db *DB) EventsAtStreamPositions(ctx context.Context, positions []int64) ([]*Event, error) {
	if len(positions) == 0 {
		return nil, nil
	}
	in, args := inList(positions, 0)
	return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE stream_pos IN (`+in+`) ORDER BY stream_pos`, args...)
}

// inList returns placeholders $first+1, $first+2, … for values, and the
// values as query arguments.
func inList[T any](values []T, first int) (string, []any) {
	placeholders := make([]string, len(values))
	args := make([]any, len(values))
	for i, v := range values {
		placeholders[i] = fmt.Sprintf("$%d", first+i+1)
		args[i] = v
	}
	return strings.Join(placeholders, ","), args
}

// ReceiptsInRange returns up to limit receipts of every room written in
// (after, upto], private ones included, in stream order.
func (db *DB) ReceiptsInRange(ctx context.Context, after, upto int64, limit int) ([]Receipt, error) {
	return queryList(ctx, db, "receipts in range", func(row dbutil.Scannable) (r Receipt, err error) {
		err = row.Scan(&r.RoomID, &r.Type, &r.UserID, &r.ThreadID, &r.EventID, &r.TS, &r.StreamPos)
		return r, err
	}, `SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos FROM receipts
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos LIMIT $3`, after, upto, limit)
}

// PresenceInRange returns up to limit presence states of any user written
// in (after, upto], in stream order.
func (db *DB) PresenceInRange(ctx context.Context, after, upto int64, limit int) ([]Presence, error) {
	return queryList(ctx, db, "presence in range", scanPresence, `SELECT `+presenceColumns+` FROM presence
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos LIMIT $3`, after, upto, limit)
}

// AddressedToDevice is a pending to-device message with its recipient.
type AddressedToDevice struct {
	ToDeviceMessage
	UserID   id.UserID
	DeviceID id.DeviceID
}

// ToDeviceInRange returns up to limit pending to-device messages of any
// device with positions in (after, upto], in stream order.
func (db *DB) ToDeviceInRange(ctx context.Context, after, upto int64, limit int) ([]AddressedToDevice, error) {
	return queryList(ctx, db, "to-device in range", func(row dbutil.Scannable) (AddressedToDevice, error) {
		var m AddressedToDevice
		var content string
		err := row.Scan(&m.StreamPos, &m.UserID, &m.DeviceID, &m.Sender, &m.Type, &content)
		m.Content = json.RawMessage(content)
		return m, err
	}, `SELECT stream_pos, user_id, device_id, sender, type, content FROM to_device
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos LIMIT $3`, after, upto, limit)
}

// CanonicalAliases returns the alias and alt_aliases of a room's current
// m.room.canonical_alias event (none when it has no such event).
func (db *DB) CanonicalAliases(ctx context.Context, roomID id.RoomID) ([]id.RoomAlias, error) {
	var pdu string
	err := db.QueryRow(ctx, `SELECT e.pdu FROM current_state cs JOIN events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND cs.type = $2 AND cs.state_key = ''`, roomID, event.StateCanonicalAlias.Type).Scan(&pdu)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("canonical alias: %w", err)
	}
	var out []id.RoomAlias
	if a := gjson.Get(pdu, "content.alias"); a.Type == gjson.String && a.Str != "" {
		out = append(out, id.RoomAlias(a.Str))
	}
	for _, a := range gjson.Get(pdu, "content.alt_aliases").Array() {
		if a.Type == gjson.String && a.Str != "" {
			out = append(out, id.RoomAlias(a.Str))
		}
	}
	return out, nil
}
