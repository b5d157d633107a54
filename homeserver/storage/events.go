package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// Room is a room's row.
type Room struct {
	RoomID    id.RoomID
	Version   id.RoomVersion
	Creator   id.UserID
	IsPublic  bool
	LastPos   int64
	CreatedTS int64
}

// Event is a stored event: its PDU plus what the server derived from it.
type Event struct {
	StreamPos      int64
	EventID        id.EventID
	RoomID         id.RoomID
	Type           string
	StateKey       *string
	Sender         id.UserID
	Depth          int64
	OriginServerTS int64
	StateBefore    int64
	StateAfter     int64
	PDU            []byte
	RedactedBy     id.EventID
	RelType        string
	RelatesTo      id.EventID
	RelKey         string
	DeviceID       id.DeviceID
	TxnID          string
	// ReplacesState is the state event this one replaced ("" for none).
	ReplacesState id.EventID
}

// StateKey identifies a state entry.
type StateKey struct {
	Type     string
	StateKey string
}

// StateMap maps state keys to event IDs.
type StateMap map[StateKey]id.EventID

// InsertRoom creates a room row.
func (db *DB) InsertRoom(ctx context.Context, r *Room) error {
	_, err := db.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, is_public, last_pos, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		r.RoomID, string(r.Version), r.Creator, r.IsPublic, r.LastPos, r.CreatedTS)
	if err != nil {
		return fmt.Errorf("insert room: %w", err)
	}
	return nil
}

// GetRoom returns a room or ErrNotFound. With forUpdate on PostgreSQL the
// row is locked until the transaction ends, serialising writers to one room
// across homeserver processes (SQLite serialises all writers anyway).
func (db *DB) GetRoom(ctx context.Context, roomID id.RoomID, forUpdate bool) (*Room, error) {
	q := `SELECT room_id, room_version, creator, is_public, last_pos, created_ts FROM rooms WHERE room_id = $1`
	if forUpdate && db.Dialect == dbutil.Postgres {
		q += ` FOR UPDATE`
	}
	var r Room
	err := db.QueryRow(ctx, q, roomID).Scan(&r.RoomID, &r.Version, &r.Creator, &r.IsPublic, &r.LastPos, &r.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get room: %w", err)
	}
	return &r, nil
}

// SetRoomLastPos records the room's latest stream position.
func (db *DB) SetRoomLastPos(ctx context.Context, roomID id.RoomID, pos int64) error {
	_, err := db.Exec(ctx, `UPDATE rooms SET last_pos = $2 WHERE room_id = $1`, roomID, pos)
	return err
}

// SetRoomPublic sets the room's directory visibility.
func (db *DB) SetRoomPublic(ctx context.Context, roomID id.RoomID, public bool) error {
	return db.expectOne(ctx, "set room visibility", `UPDATE rooms SET is_public = $2 WHERE room_id = $1`, roomID, public)
}

// InsertEvent stores an event.
func (db *DB) InsertEvent(ctx context.Context, e *Event) error {
	_, err := db.Exec(ctx, `
		INSERT INTO events (stream_pos, event_id, room_id, type, state_key, sender, depth, origin_server_ts,
			state_before, state_after, pdu, rel_type, relates_to, rel_key, device_id, txn_id, replaces_state)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		e.StreamPos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginServerTS,
		e.StateBefore, e.StateAfter, string(e.PDU), nullString(e.RelType), nullString(string(e.RelatesTo)),
		nullString(e.RelKey), nullString(string(e.DeviceID)), nullString(e.TxnID), nullString(string(e.ReplacesState)))
	if err != nil {
		return fmt.Errorf("insert event: %w", err)
	}
	return db.indexForSearch(ctx, e)
}

const eventColumns = `stream_pos, event_id, room_id, type, state_key, sender, depth, origin_server_ts,
	state_before, state_after, pdu, redacted_by, rel_type, relates_to, rel_key, device_id, txn_id, replaces_state`

func scanEvent(row interface{ Scan(...any) error }) (*Event, error) {
	var e Event
	var stateKey, redactedBy, relType, relatesTo, relKey, deviceID, txnID, replaces sql.NullString
	var pdu string
	err := row.Scan(&e.StreamPos, &e.EventID, &e.RoomID, &e.Type, &stateKey, &e.Sender, &e.Depth, &e.OriginServerTS,
		&e.StateBefore, &e.StateAfter, &pdu, &redactedBy, &relType, &relatesTo, &relKey, &deviceID, &txnID, &replaces)
	if err != nil {
		return nil, err
	}
	if stateKey.Valid {
		e.StateKey = &stateKey.String
	}
	e.PDU = []byte(pdu)
	e.RedactedBy, e.RelType, e.RelatesTo = id.EventID(redactedBy.String), relType.String, id.EventID(relatesTo.String)
	e.RelKey, e.DeviceID, e.TxnID = relKey.String, id.DeviceID(deviceID.String), txnID.String
	e.ReplacesState = id.EventID(replaces.String)
	return &e, nil
}

func (db *DB) queryEvents(ctx context.Context, query string, args ...any) ([]*Event, error) {
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query events: %w", err)
	}
	defer rows.Close()
	var events []*Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		events = append(events, e)
	}
	return events, rows.Err()
}

// GetEvent returns one event by ID, or ErrNotFound.
func (db *DB) GetEvent(ctx context.Context, eventID id.EventID) (*Event, error) {
	e, err := scanEvent(db.QueryRow(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1`, eventID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get event: %w", err)
	}
	return e, nil
}

// GetEvents returns the events with the given IDs that exist, in no order.
func (db *DB) GetEvents(ctx context.Context, ids []id.EventID) ([]*Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	in, args := inList(ids, 0)
	return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id IN (`+in+`)`, args...)
}

// RoomEvents returns up to limit events of a room with stream positions in
// (after, upto], newest first when backwards is set, else oldest first.
func (db *DB) RoomEvents(ctx context.Context, roomID id.RoomID, after, upto int64, limit int, backwards bool) ([]*Event, error) {
	order := "ASC"
	if backwards {
		order = "DESC"
	}
	return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3
		ORDER BY stream_pos `+order+` LIMIT $4`, roomID, after, upto, limit)
}

// RoomEventsTopological pages through a room in (depth, stream) order. A
// token (depth, pos) is the point just after that key: backwards returns
// events at or before it, newest first; forwards those after it, oldest
// first.
func (db *DB) RoomEventsTopological(ctx context.Context, roomID id.RoomID, depth, pos int64, limit int, backwards bool) ([]*Event, error) {
	if backwards {
		return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events
			WHERE room_id = $1 AND (depth < $2 OR (depth = $2 AND stream_pos <= $3))
			ORDER BY depth DESC, stream_pos DESC LIMIT $4`, roomID, depth, pos, limit)
	}
	return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND (depth > $2 OR (depth = $2 AND stream_pos > $3))
		ORDER BY depth ASC, stream_pos ASC LIMIT $4`, roomID, depth, pos, limit)
}

// SetRedactedBy replaces an event's PDU with its redacted form.
func (db *DB) SetRedactedBy(ctx context.Context, eventID, redactedBy id.EventID, redactedPDU []byte) error {
	if err := db.unindexForSearch(ctx, eventID); err != nil {
		return err
	}
	_, err := db.Exec(ctx, `UPDATE events SET redacted_by = $2, pdu = $3, rel_type = NULL, relates_to = NULL, rel_key = NULL WHERE event_id = $1`,
		eventID, redactedBy, string(redactedPDU))
	return err
}

// SetExtremities replaces a room's forward extremities.
func (db *DB) SetExtremities(ctx context.Context, roomID id.RoomID, eventIDs []id.EventID) error {
	if _, err := db.Exec(ctx, `DELETE FROM room_extremities WHERE room_id = $1`, roomID); err != nil {
		return fmt.Errorf("clear extremities: %w", err)
	}
	for _, eid := range eventIDs {
		if _, err := db.Exec(ctx, `INSERT INTO room_extremities (room_id, event_id) VALUES ($1, $2)`, roomID, eid); err != nil {
			return fmt.Errorf("insert extremity: %w", err)
		}
	}
	return nil
}

// Extremities returns a room's forward extremities.
func (db *DB) Extremities(ctx context.Context, roomID id.RoomID) ([]id.EventID, error) {
	rows, err := db.Query(ctx, `SELECT event_id FROM room_extremities WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("get extremities: %w", err)
	}
	defer rows.Close()
	var ids []id.EventID
	for rows.Next() {
		var eid id.EventID
		if err := rows.Scan(&eid); err != nil {
			return nil, err
		}
		ids = append(ids, eid)
	}
	return ids, rows.Err()
}

// MaxStateChain bounds how many deltas a state group may sit on before a
// full snapshot is written, which bounds the cost of loading any state.
const MaxStateChain = 64

// InsertStateGroup stores a state group as a delta on prev (or, with prev
// 0 or a long chain, as a full snapshot of full). It returns the new ID.
func (db *DB) InsertStateGroup(ctx context.Context, roomID id.RoomID, prev int64, prevChain int, delta, full StateMap) (int64, error) {
	entries, chain := delta, prevChain+1
	var prevArg sql.NullInt64
	if prev == 0 || chain > MaxStateChain {
		entries, chain = full, 0
	} else {
		prevArg = sql.NullInt64{Int64: prev, Valid: true}
	}
	var groupID int64
	err := db.QueryRow(ctx, `INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES ($1, $2, $3) RETURNING id`,
		roomID, prevArg, chain).Scan(&groupID)
	if err != nil {
		return 0, fmt.Errorf("insert state group: %w", err)
	}
	for k, eid := range entries {
		if _, err := db.Exec(ctx, `INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)`,
			groupID, k.Type, k.StateKey, eid); err != nil {
			return 0, fmt.Errorf("insert state group entry: %w", err)
		}
	}
	return groupID, nil
}

// StateGroupChain returns the chain length of a group.
func (db *DB) StateGroupChain(ctx context.Context, groupID int64) (int, error) {
	var n int
	err := db.QueryRow(ctx, `SELECT chain_len FROM state_groups WHERE id = $1`, groupID).Scan(&n)
	return n, err
}

// LoadStateGroup resolves a state group to its full state map.
func (db *DB) LoadStateGroup(ctx context.Context, groupID int64) (StateMap, error) {
	var chain []int64
	for g := groupID; g != 0; {
		chain = append(chain, g)
		var prev sql.NullInt64
		if err := db.QueryRow(ctx, `SELECT prev_group FROM state_groups WHERE id = $1`, g).Scan(&prev); err != nil {
			return nil, fmt.Errorf("load state group %d: %w", g, err)
		}
		g = prev.Int64
	}
	state := StateMap{}
	// Apply from the snapshot forwards so later deltas win.
	for i := len(chain) - 1; i >= 0; i-- {
		rows, err := db.Query(ctx, `SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = $1`, chain[i])
		if err != nil {
			return nil, fmt.Errorf("load state entries: %w", err)
		}
		for rows.Next() {
			var k StateKey
			var eid id.EventID
			if err := rows.Scan(&k.Type, &k.StateKey, &eid); err != nil {
				rows.Close()
				return nil, err
			}
			state[k] = eid
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return state, nil
}

// UpsertCurrentState sets one entry of a room's current state.
func (db *DB) UpsertCurrentState(ctx context.Context, roomID id.RoomID, k StateKey, eventID id.EventID, membership string, pos int64) error {
	_, err := db.Exec(ctx, `
		INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_pos) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership, stream_pos = excluded.stream_pos`,
		roomID, k.Type, k.StateKey, eventID, nullString(membership), pos)
	if err != nil {
		return fmt.Errorf("upsert current state: %w", err)
	}
	return nil
}

// CurrentState returns a room's current state map.
func (db *DB) CurrentState(ctx context.Context, roomID id.RoomID) (StateMap, error) {
	rows, err := db.Query(ctx, `SELECT type, state_key, event_id FROM current_state WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, fmt.Errorf("current state: %w", err)
	}
	defer rows.Close()
	state := StateMap{}
	for rows.Next() {
		var k StateKey
		var eid id.EventID
		if err := rows.Scan(&k.Type, &k.StateKey, &eid); err != nil {
			return nil, err
		}
		state[k] = eid
	}
	return state, rows.Err()
}

// InsertMembership records a membership change.
func (db *DB) InsertMembership(ctx context.Context, pos int64, roomID id.RoomID, userID id.UserID, membership string, sender id.UserID) error {
	_, err := db.Exec(ctx, `INSERT INTO memberships (stream_pos, room_id, user_id, membership, sender) VALUES ($1, $2, $3, $4, $5)`,
		pos, roomID, userID, membership, sender)
	if err != nil {
		return fmt.Errorf("insert membership: %w", err)
	}
	return nil
}

// Membership is a user's membership in a room at some stream position.
type Membership struct {
	RoomID     id.RoomID
	UserID     id.UserID
	Membership string
	StreamPos  int64
	Sender     id.UserID
}

// UserRooms returns the user's current membership in every room they have
// any membership in.
func (db *DB) UserRooms(ctx context.Context, userID id.UserID) ([]Membership, error) {
	rows, err := db.Query(ctx, `SELECT room_id, membership, stream_pos FROM current_state
		WHERE state_key = $1 AND type = 'm.room.member'`, userID)
	if err != nil {
		return nil, fmt.Errorf("user rooms: %w", err)
	}
	defer rows.Close()
	var out []Membership
	for rows.Next() {
		m := Membership{UserID: userID}
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// MembershipChanges returns the user's membership changes in (since, upto].
func (db *DB) MembershipChanges(ctx context.Context, userID id.UserID, since, upto int64) ([]Membership, error) {
	rows, err := db.Query(ctx, `SELECT room_id, membership, stream_pos, sender FROM memberships
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, since, upto)
	if err != nil {
		return nil, fmt.Errorf("membership changes: %w", err)
	}
	defer rows.Close()
	var out []Membership
	for rows.Next() {
		m := Membership{UserID: userID}
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.StreamPos, &m.Sender); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// RoomMembers returns the users with the given memberships in a room's
// current state (all memberships when none are given).
func (db *DB) RoomMembers(ctx context.Context, roomID id.RoomID, memberships ...string) ([]Membership, error) {
	rows, err := db.Query(ctx, `SELECT state_key, membership, stream_pos FROM current_state
		WHERE room_id = $1 AND type = 'm.room.member'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("room members: %w", err)
	}
	defer rows.Close()
	var out []Membership
	for rows.Next() {
		m := Membership{RoomID: roomID}
		if err := rows.Scan(&m.UserID, &m.Membership, &m.StreamPos); err != nil {
			return nil, err
		}
		if len(memberships) == 0 || slices.Contains(memberships, m.Membership) {
			out = append(out, m)
		}
	}
	return out, rows.Err()
}

// RoomsWithEvents returns which of rooms have events in (since, upto].
func (db *DB) RoomsWithEvents(ctx context.Context, since, upto int64) (map[id.RoomID]int64, error) {
	rows, err := db.Query(ctx, `SELECT room_id, MAX(stream_pos) FROM events WHERE stream_pos > $1 AND stream_pos <= $2 GROUP BY room_id`, since, upto)
	if err != nil {
		return nil, fmt.Errorf("rooms with events: %w", err)
	}
	defer rows.Close()
	out := map[id.RoomID]int64{}
	for rows.Next() {
		var r id.RoomID
		var p int64
		if err := rows.Scan(&r, &p); err != nil {
			return nil, err
		}
		out[r] = p
	}
	return out, rows.Err()
}

// ForgetRoom hides a left room from the user's syncs for good.
func (db *DB) ForgetRoom(ctx context.Context, userID id.UserID, roomID id.RoomID) error {
	_, err := db.Exec(ctx, `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, roomID)
	return err
}

// ForgottenRooms returns the rooms the user forgot.
func (db *DB) ForgottenRooms(ctx context.Context, userID id.UserID) (map[id.RoomID]bool, error) {
	return querySet[id.RoomID](ctx, db, "forgotten rooms", `SELECT room_id FROM forgotten_rooms WHERE user_id = $1`, userID)
}

// UnforgetRoom clears a forget when the user joins again.
func (db *DB) UnforgetRoom(ctx context.Context, userID id.UserID, roomID id.RoomID) error {
	_, err := db.Exec(ctx, `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, userID, roomID)
	return err
}

// UserRoomMemberships returns a user's membership changes in one room,
// oldest first (for history visibility).
func (db *DB) UserRoomMemberships(ctx context.Context, roomID id.RoomID, userID id.UserID) ([]Membership, error) {
	rows, err := db.Query(ctx, `SELECT membership, stream_pos, sender FROM memberships
		WHERE user_id = $1 AND room_id = $2 ORDER BY stream_pos`, userID, roomID)
	if err != nil {
		return nil, fmt.Errorf("user room memberships: %w", err)
	}
	defer rows.Close()
	var out []Membership
	for rows.Next() {
		m := Membership{RoomID: roomID, UserID: userID}
		if err := rows.Scan(&m.Membership, &m.StreamPos, &m.Sender); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// StateEventsOfType returns a room's state events of one type and state
// key, oldest first (e.g. the history of m.room.history_visibility).
func (db *DB) StateEventsOfType(ctx context.Context, roomID id.RoomID, evtType, stateKey string) ([]*Event, error) {
	return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND type = $2 AND state_key = $3 ORDER BY stream_pos`, roomID, evtType, stateKey)
}

// StateEventsBetween returns a room's state events in (after, before),
// oldest first.
func (db *DB) StateEventsBetween(ctx context.Context, roomID id.RoomID, after, before int64) ([]*Event, error) {
	return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND stream_pos > $2 AND stream_pos < $3 AND state_key IS NOT NULL ORDER BY stream_pos`, roomID, after, before)
}
