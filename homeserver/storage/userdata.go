package storage

// Per-user data that is not a room event: account data (global, per room,
// and room tags as m.tag), sync filters, to-device messages and presence.
// Every write that a /sync can return takes a stream position from
// AllocStreamPos inside its transaction; the *Since readers return what
// lies in (since, upto].

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.mau.fi/util/dbutil"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// MaxAccountDataBytes caps one account data event's content (64 KiB), so a
// client cannot make every initial sync of its account huge.
const MaxAccountDataBytes = 64 * 1024

// ErrAccountDataTooLarge is returned when content exceeds MaxAccountDataBytes.
var ErrAccountDataTooLarge = errors.New("account data too large")

// errUnchanged makes UpdateAccountData roll back without writing.
var errUnchanged = errors.New("unchanged")

// AccountDataEvent is one account data entry as /sync returns it.
type AccountDataEvent struct {
	Type      string          `json:"type"`
	Content   json.RawMessage `json:"content"`
	StreamPos int64           `json:"-"`
}

// GetAccountData returns the content of one account data type, global when
// roomID is empty, or ErrNotFound.
func (db *DB) GetAccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, eventType string) (json.RawMessage, error) {
	var content string
	err := db.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, eventType).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get account data: %w", err)
	}
	return json.RawMessage(content), nil
}

// SetAccountData stores one account data type (global when roomID is empty)
// and returns the stream position of the write.
func (db *DB) SetAccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, eventType string, content json.RawMessage) (int64, error) {
	return db.UpdateAccountData(ctx, userID, roomID, eventType, func(json.RawMessage) (json.RawMessage, bool, error) {
		return content, true, nil
	})
}

// UpdateAccountData is a read-modify-write of one account data type: update
// gets the current content (nil when unset) and returns the new content and
// whether anything changed. Concurrent updates of any account data are
// serialised, so none is lost. It returns the write's stream position, or 0
// when update reported no change (nothing is written then).
func (db *DB) UpdateAccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, eventType string,
	update func(old json.RawMessage) (json.RawMessage, bool, error)) (int64, error) {
	return db.writeAtNewPos(ctx, func(ctx context.Context, pos int64) error {
		old, err := db.GetAccountData(ctx, userID, roomID, eventType)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		content, changed, err := update(old)
		if err != nil {
			return err
		} else if !changed {
			return errUnchanged
		}
		if len(content) > MaxAccountDataBytes {
			return ErrAccountDataTooLarge
		}
		if err := db.upsertAccountData(ctx, userID, roomID, eventType, content, pos); err != nil {
			return fmt.Errorf("set account data: %w", err)
		}
		return nil
	})
}

// AccountDataSince returns the user's account data written in (since, upto]
// (since 0: all of it), global and per room, each list in stream order.
// Only the latest content of each type is kept, so a type written twice in
// the range appears once.
func (db *DB) AccountDataSince(ctx context.Context, userID id.UserID, since, upto int64) (global []AccountDataEvent, rooms map[id.RoomID][]AccountDataEvent, err error) {
	rows, err := db.Query(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, since, upto)
	if err != nil {
		return nil, nil, fmt.Errorf("account data since: %w", err)
	}
	defer rows.Close()
	rooms = map[id.RoomID][]AccountDataEvent{}
	for rows.Next() {
		var roomID id.RoomID
		var content string
		var evt AccountDataEvent
		if err := rows.Scan(&roomID, &evt.Type, &content, &evt.StreamPos); err != nil {
			return nil, nil, fmt.Errorf("account data since: %w", err)
		}
		evt.Content = json.RawMessage(content)
		if roomID == "" {
			global = append(global, evt)
		} else {
			rooms[roomID] = append(rooms[roomID], evt)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("account data since: %w", err)
	}
	return global, rooms, nil
}

// filterIDLength makes filter IDs short (they go into every /sync URL) yet
// unlikely to collide within one user's filters.
const filterIDLength = 10

// CreateFilter stores a sync filter (compact JSON) and returns its ID. A
// filter identical to one the user already has gets that filter's ID, so
// clients that upload their filter on every start don't pile up rows.
func (db *DB) CreateFilter(ctx context.Context, userID id.UserID, filter json.RawMessage) (string, error) {
	var filterID string
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		err := db.QueryRow(ctx, `SELECT filter_id FROM filters WHERE user_id = $1 AND filter = $2 LIMIT 1`, userID, string(filter)).Scan(&filterID)
		if err == nil {
			return nil
		} else if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("find filter: %w", err)
		}
		for range 5 {
			// Base62 IDs never start with '{', which the spec reserves
			// for inline filters.
			filterID = random.String(filterIDLength)
			res, err := db.Exec(ctx, `INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
				userID, filterID, string(filter))
			if err != nil {
				return fmt.Errorf("insert filter: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				return nil
			}
		}
		return errors.New("insert filter: no free filter ID")
	})
	if err != nil {
		return "", err
	}
	return filterID, nil
}

// GetFilter returns one of the user's filters, or ErrNotFound.
func (db *DB) GetFilter(ctx context.Context, userID id.UserID, filterID string) (json.RawMessage, error) {
	var filter string
	err := db.QueryRow(ctx, `SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, filterID).Scan(&filter)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get filter: %w", err)
	}
	return json.RawMessage(filter), nil
}

// ToDeviceMessage is one pending to-device message as /sync returns it.
type ToDeviceMessage struct {
	Sender    id.UserID       `json:"sender"`
	Type      string          `json:"type"`
	Content   json.RawMessage `json:"content"`
	StreamPos int64           `json:"-"`
}

// ToDeviceRequest is one PUT /sendToDevice.
type ToDeviceRequest struct {
	Sender       id.UserID
	SenderDevice id.DeviceID
	// TxnID identifies the request among the sender device's sendToDevice
	// requests (client_txns endpoint "sendToDevice").
	TxnID string
	Type  string
	// Messages maps local recipients to device IDs ("*": every device of
	// the user) to content. Unknown users and devices are skipped.
	Messages map[id.UserID]map[id.DeviceID]json.RawMessage
	// Response is stored for retransmissions of the same TxnID.
	Response json.RawMessage
}

// ToDeviceResult says what SendToDevice did.
type ToDeviceResult struct {
	// StreamPos is the last position used (0 when no message was stored).
	StreamPos int64
	// Recipients are the users who got at least one message, sorted.
	Recipients []id.UserID
	// Duplicate is set when TxnID was seen before: nothing was stored and
	// Response is the first request's response.
	Duplicate bool
	Response  json.RawMessage
}

// clientTxnToDevice is the client_txns endpoint of PUT /sendToDevice.
const clientTxnToDevice = "sendToDevice"

// toDeviceInsertBatch rows per INSERT keep the statement under SQLite's
// bound-parameter limit (6 per row).
const toDeviceInsertBatch = 100

// SendToDevice stores a sendToDevice request's messages, one row and one
// stream position per recipient device, and records its transaction ID in
// the same transaction: a retransmission (same device and TxnID) stores
// nothing and gets the first response back.
func (db *DB) SendToDevice(ctx context.Context, req *ToDeviceRequest) (*ToDeviceResult, error) {
	type row struct {
		user    id.UserID
		device  id.DeviceID
		content json.RawMessage
	}
	var res ToDeviceResult
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		res = ToDeviceResult{}
		prev, claimed, err := db.claimClientTxn(ctx, req.Sender, req.SenderDevice, clientTxnToDevice, req.TxnID, req.Response)
		if err != nil {
			return err
		} else if !claimed {
			res.Duplicate, res.Response = true, prev
			return nil
		}
		res.Response = req.Response
		users := make([]id.UserID, 0, len(req.Messages))
		for user := range req.Messages {
			users = append(users, user)
		}
		slices.Sort(users)
		var rows []row
		for _, user := range users {
			byDevice := req.Messages[user]
			devices, err := db.deviceIDs(ctx, user)
			if err != nil {
				return err
			}
			n := len(rows)
			for _, device := range devices {
				// An explicit entry for a device wins over "*": only one
				// message per device and request.
				content, ok := byDevice[device]
				if !ok {
					content, ok = byDevice["*"]
				}
				if ok {
					rows = append(rows, row{user, device, content})
				}
			}
			if len(rows) > n {
				res.Recipients = append(res.Recipients, user)
			}
		}
		if len(rows) == 0 {
			return nil
		}
		last, err := db.AllocStreamPos(ctx, int64(len(rows)))
		if err != nil {
			return err
		}
		first := last - int64(len(rows)) + 1
		for start := 0; start < len(rows); start += toDeviceInsertBatch {
			batch := rows[start:min(start+toDeviceInsertBatch, len(rows))]
			var q strings.Builder
			q.WriteString(`INSERT INTO to_device (stream_pos, user_id, device_id, sender, type, content) VALUES `)
			args := make([]any, 0, 6*len(batch))
			for i, r := range batch {
				if i > 0 {
					q.WriteString(", ")
				}
				n := len(args)
				fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6)
				args = append(args, first+int64(start+i), r.user, r.device, req.Sender, req.Type, string(r.content))
			}
			if _, err := db.Exec(ctx, q.String(), args...); err != nil {
				return fmt.Errorf("insert to-device messages: %w", err)
			}
		}
		res.StreamPos = last
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// claimClientTxn records a client transaction ID with its response. It
// reports claimed=false and the stored response when the ID was already
// used by the same device on the same endpoint. Run it inside the
// transaction that does the request's work, so a failed request leaves
// its ID free for the retry.
func (db *DB) claimClientTxn(ctx context.Context, userID id.UserID, deviceID id.DeviceID, endpoint, txnID string, response json.RawMessage) (json.RawMessage, bool, error) {
	res, err := db.Exec(ctx, `
		INSERT INTO client_txns (user_id, device_id, endpoint, txn_id, response, created_ts) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (user_id, device_id, endpoint, txn_id) DO NOTHING`,
		userID, deviceID, endpoint, txnID, string(response), nowMS())
	if err != nil {
		return nil, false, fmt.Errorf("claim transaction ID: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil, true, nil
	}
	var prev string
	err = db.QueryRow(ctx, `SELECT response FROM client_txns WHERE user_id = $1 AND device_id = $2 AND endpoint = $3 AND txn_id = $4`,
		userID, deviceID, endpoint, txnID).Scan(&prev)
	if err != nil {
		return nil, false, fmt.Errorf("read transaction response: %w", err)
	}
	return json.RawMessage(prev), false, nil
}

// deviceIDs lists a user's device IDs (none for unknown users).
func (db *DB) deviceIDs(ctx context.Context, userID id.UserID) ([]id.DeviceID, error) {
	rows, err := db.Query(ctx, `SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list device IDs: %w", err)
	}
	defer rows.Close()
	var out []id.DeviceID
	for rows.Next() {
		var d id.DeviceID
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("list device IDs: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ToDeviceSince returns up to limit (≤ 0: all) of a device's pending
// to-device messages with positions in (since, upto], oldest first.
func (db *DB) ToDeviceSince(ctx context.Context, userID id.UserID, deviceID id.DeviceID, since, upto int64, limit int) ([]ToDeviceMessage, error) {
	query := `SELECT stream_pos, sender, type, content FROM to_device
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4 ORDER BY stream_pos`
	args := []any{userID, deviceID, since, upto}
	if limit > 0 {
		query += ` LIMIT $5`
		args = append(args, limit)
	}
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("to-device since: %w", err)
	}
	defer rows.Close()
	var out []ToDeviceMessage
	for rows.Next() {
		var m ToDeviceMessage
		var content string
		if err := rows.Scan(&m.StreamPos, &m.Sender, &m.Type, &content); err != nil {
			return nil, fmt.Errorf("to-device since: %w", err)
		}
		m.Content = json.RawMessage(content)
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteToDeviceUpTo deletes a device's messages at positions ≤ upto: the
// device acknowledged them by syncing past them.
func (db *DB) DeleteToDeviceUpTo(ctx context.Context, userID id.UserID, deviceID id.DeviceID, upto int64) error {
	_, err := db.Exec(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`, userID, deviceID, upto)
	if err != nil {
		return fmt.Errorf("delete to-device messages: %w", err)
	}
	return nil
}

// DeleteToDeviceForDevice deletes every pending message of a device that is
// being deleted (call it in the same transaction).
func (db *DB) DeleteToDeviceForDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID) error {
	_, err := db.Exec(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	if err != nil {
		return fmt.Errorf("delete device's to-device messages: %w", err)
	}
	return nil
}

// DeleteToDeviceForOtherDevices deletes the pending messages of every
// device of the user except keep (keep "": all devices), alongside
// DeleteOtherDevices and deactivation.
func (db *DB) DeleteToDeviceForOtherDevices(ctx context.Context, userID id.UserID, keep id.DeviceID) error {
	_, err := db.Exec(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id <> $2`, userID, keep)
	if err != nil {
		return fmt.Errorf("delete other devices' to-device messages: %w", err)
	}
	return nil
}

// Presence is a user's stored presence.
type Presence struct {
	UserID          id.UserID
	Presence        event.Presence
	StatusMsg       *string
	LastActiveTS    int64
	CurrentlyActive bool
	StreamPos       int64
}

// PresenceContent is presence as clients see it: the body of GET
// /presence/{userId}/status and the content of m.presence events.
type PresenceContent struct {
	Presence        event.Presence `json:"presence"`
	LastActiveAgo   *int64         `json:"last_active_ago,omitempty"`
	StatusMsg       *string        `json:"status_msg,omitempty"`
	CurrentlyActive *bool          `json:"currently_active,omitempty"`
}

// Content renders the presence at now (unix ms): last_active_ago is
// relative to now, and currently_active is only sent with online, as the
// spec describes.
func (p *Presence) Content(now int64) PresenceContent {
	ago := max(now-p.LastActiveTS, 0)
	out := PresenceContent{Presence: p.Presence, LastActiveAgo: &ago, StatusMsg: p.StatusMsg}
	if p.Presence == event.PresenceOnline {
		active := p.CurrentlyActive
		out.CurrentlyActive = &active
	}
	return out
}

const presenceColumns = `user_id, state, status_msg, last_active_ts, currently_active, stream_pos`

func scanPresence(row dbutil.Scannable) (Presence, error) {
	var p Presence
	var msg sql.NullString
	err := row.Scan(&p.UserID, &p.Presence, &msg, &p.LastActiveTS, &p.CurrentlyActive, &p.StreamPos)
	if msg.Valid {
		p.StatusMsg = &msg.String
	}
	return p, err
}

// SetPresence stores a user's presence as set by the user now: the
// activity time becomes now, and currently_active follows the online
// state. It returns the write's stream position.
func (db *DB) SetPresence(ctx context.Context, userID id.UserID, state event.Presence, statusMsg *string) (int64, error) {
	return db.writeAtNewPos(ctx, func(ctx context.Context, pos int64) error {
		var msg sql.NullString
		if statusMsg != nil {
			msg = sql.NullString{String: *statusMsg, Valid: true}
		}
		_, err := db.Exec(ctx, `
			INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_pos)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
				last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active,
				stream_pos = excluded.stream_pos`,
			userID, string(state), msg, nowMS(), state == event.PresenceOnline, pos)
		if err != nil {
			return fmt.Errorf("set presence: %w", err)
		}
		return nil
	})
}

// GetPresence returns a user's presence, or ErrNotFound if never set.
func (db *DB) GetPresence(ctx context.Context, userID id.UserID) (*Presence, error) {
	p, err := scanPresence(db.QueryRow(ctx, `SELECT `+presenceColumns+` FROM presence WHERE user_id = $1`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get presence: %w", err)
	}
	return &p, nil
}

// presenceQueryBatch user IDs per query keep it under SQLite's
// bound-parameter limit.
const presenceQueryBatch = 500

// PresenceSince returns the presence of those of userIDs whose presence
// changed in (since, upto], in stream order.
func (db *DB) PresenceSince(ctx context.Context, userIDs []id.UserID, since, upto int64) ([]Presence, error) {
	userIDs = slices.Clone(userIDs)
	slices.Sort(userIDs)
	userIDs = slices.Compact(userIDs)
	var out []Presence
	for start := 0; start < len(userIDs); start += presenceQueryBatch {
		batch := userIDs[start:min(start+presenceQueryBatch, len(userIDs))]
		args := []any{since, upto}
		placeholders := make([]string, len(batch))
		for i, u := range batch {
			args = append(args, u)
			placeholders[i] = fmt.Sprintf("$%d", i+3)
		}
		rows, err := db.Query(ctx, `SELECT `+presenceColumns+` FROM presence
			WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id IN (`+strings.Join(placeholders, ", ")+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("presence since: %w", err)
		}
		for rows.Next() {
			p, err := scanPresence(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("presence since: %w", err)
			}
			out = append(out, p)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("presence since: %w", err)
		}
	}
	slices.SortFunc(out, func(a, b Presence) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	return out, nil
}

// PresenceChanged reports whether anyone's presence changed in (since,
// upto]: syncs check it before resolving whose presence they may see.
func (db *DB) PresenceChanged(ctx context.Context, since, upto int64) (bool, error) {
	var one int
	err := db.QueryRow(ctx, `SELECT 1 FROM presence WHERE stream_pos > $1 AND stream_pos <= $2 LIMIT 1`, since, upto).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// upsertAccountData writes one account data entry at stream position pos.
func (db *DB) upsertAccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, eventType string, content []byte, pos int64) error {
	_, err := db.Exec(ctx, `
		INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		userID, roomID, eventType, string(content), pos)
	return err
}
