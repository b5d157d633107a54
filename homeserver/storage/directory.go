package storage

import (
	"context"
	"fmt"
	"strings"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// The published room directory and the user directory both search room
// state, which lives in the events' PDUs. jsonText extracts a field with
// the dialect's JSON functions; it is the one place where their spelling
// differs. path elements are constants of this file, never user input.
func (db *DB) jsonText(column string, path ...string) string {
	if db.Dialect == dbutil.Postgres {
		return "(" + column + "::json #>> '{" + strings.Join(path, ",") + "}')"
	}
	jsonPath := "$"
	for _, p := range path {
		jsonPath += "." + p
	}
	return "json_extract(" + column + ", '" + jsonPath + "')"
}

// likeContains is a LIKE pattern (with ESCAPE '\') matching lowercase text
// that contains term. Matching lowercases the column with SQL LOWER(),
// which folds ASCII on SQLite and follows the database's locale on
// PostgreSQL.
func likeContains(term string) string {
	return "%" + likeEscape(strings.ToLower(term)) + "%"
}

func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// PublicRoomKey is a position in the published room directory, which is
// ordered by joined member count (largest first), then room ID.
type PublicRoomKey struct {
	JoinedMembers int64
	RoomID        id.RoomID
}

// PublicRoom is a room listed in the published room directory.
type PublicRoom struct {
	RoomID        id.RoomID
	JoinedMembers int64
}

// Key returns the room's position in the directory order.
func (r PublicRoom) Key() PublicRoomKey {
	return PublicRoomKey{JoinedMembers: r.JoinedMembers, RoomID: r.RoomID}
}

// PublicRoomsQuery selects a page of the published room directory.
type PublicRoomsQuery struct {
	// SearchTerm keeps rooms whose name, topic or canonical alias contains
	// it, case-insensitively; "" keeps all.
	SearchTerm string
	// RoomTypes keeps rooms whose m.room.create type is one of these; a
	// nil entry stands for rooms without a type. Empty keeps all.
	RoomTypes []*string
	// After returns the rooms after this key; Before the rooms before it.
	// At most one is set; neither starts at the top.
	After, Before *PublicRoomKey
	// Limit bounds the page (> 0).
	Limit int
	// Network picks the directory: "" the server's own list, AllNetworks
	// that list plus every appservice network's, else one network's rooms
	// as published by appservices.
	Network string
}

// AllNetworks is PublicRoomsQuery.Network for include_all_networks.
const AllNetworks = "*"

// publicRoomsFilter is the WHERE clause (on rooms r) shared by the listing
// and the count, starting at argument $start.
func (db *DB) publicRoomsFilter(q *PublicRoomsQuery, start int) (string, []any) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", start+len(args)-1)
	}
	const inNetwork = `EXISTS (SELECT 1 FROM appservice_room_directory d WHERE d.room_id = r.room_id`
	var where []string
	switch q.Network {
	case "":
		where = []string{"r.is_public = true"}
	case AllNetworks:
		where = []string{"(r.is_public = true OR " + inNetwork + "))"}
	default:
		where = []string{inNetwork + " AND d.network_id = " + arg(q.Network) + ")"}
	}
	if q.SearchTerm != "" {
		field := `CASE s.type WHEN 'm.room.name' THEN ` + db.jsonText("e.pdu", "content", "name") +
			` WHEN 'm.room.topic' THEN ` + db.jsonText("e.pdu", "content", "topic") +
			` ELSE ` + db.jsonText("e.pdu", "content", "alias") + ` END`
		where = append(where, `EXISTS (SELECT 1 FROM current_state s JOIN events e ON e.event_id = s.event_id
			WHERE s.room_id = r.room_id AND s.state_key = ''
				AND s.type IN ('m.room.name', 'm.room.topic', 'm.room.canonical_alias')
				AND LOWER(`+field+`) LIKE `+arg(likeContains(q.SearchTerm))+` ESCAPE '\')`)
	}
	if len(q.RoomTypes) > 0 {
		roomType := db.jsonText("e.pdu", "content", "type")
		var in []string
		withoutType := false
		for _, t := range q.RoomTypes {
			if t == nil {
				withoutType = true
			} else {
				in = append(in, arg(*t))
			}
		}
		var match []string
		if len(in) > 0 {
			match = append(match, roomType+" IN ("+strings.Join(in, ", ")+")")
		}
		if withoutType {
			match = append(match, roomType+" IS NULL")
		}
		where = append(where, `EXISTS (SELECT 1 FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id = r.room_id AND c.type = 'm.room.create' AND c.state_key = ''
				AND (`+strings.Join(match, " OR ")+`))`)
	}
	return strings.Join(where, " AND "), args
}

// PublicRooms returns a page of the published room directory in directory
// order, each room with its joined member count, and whether more rooms
// lie beyond the page in the direction of travel.
func (db *DB) PublicRooms(ctx context.Context, q PublicRoomsQuery) ([]PublicRoom, bool, error) {
	if q.Limit <= 0 {
		return nil, false, fmt.Errorf("public rooms: limit must be positive")
	}
	where, args := db.publicRoomsFilter(&q, 1)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	page, order := "", "joined DESC, room_id ASC"
	switch {
	case q.After != nil:
		n, r := arg(q.After.JoinedMembers), arg(q.After.RoomID)
		page = fmt.Sprintf("WHERE joined < %s OR (joined = %s AND room_id > %s)", n, n, r)
	case q.Before != nil:
		n, r := arg(q.Before.JoinedMembers), arg(q.Before.RoomID)
		page = fmt.Sprintf("WHERE joined > %s OR (joined = %s AND room_id < %s)", n, n, r)
		order = "joined ASC, room_id DESC"
	}
	// One more than the page tells whether there are more.
	query := `SELECT room_id, joined FROM (
			SELECT r.room_id AS room_id, COUNT(m.state_key) AS joined
			FROM rooms r
			LEFT JOIN current_state m ON m.room_id = r.room_id AND m.type = 'm.room.member' AND m.membership = 'join'
			WHERE ` + where + `
			GROUP BY r.room_id
		) public_rooms ` + page + ` ORDER BY ` + order + ` LIMIT ` + arg(q.Limit+1)
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return nil, false, fmt.Errorf("public rooms: %w", err)
	}
	defer rows.Close()
	var out []PublicRoom
	for rows.Next() {
		var r PublicRoom
		if err := rows.Scan(&r.RoomID, &r.JoinedMembers); err != nil {
			return nil, false, fmt.Errorf("public rooms: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("public rooms: %w", err)
	}
	more := len(out) > q.Limit
	if more {
		out = out[:q.Limit]
	}
	if q.Before != nil {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, more, nil
}

// CountPublicRooms counts the rooms of the published room directory that
// match q's search term and room types (its page fields are ignored).
func (db *DB) CountPublicRooms(ctx context.Context, q PublicRoomsQuery) (int, error) {
	where, args := db.publicRoomsFilter(&q, 1)
	var n int
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM rooms r WHERE `+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count public rooms: %w", err)
	}
	return n, nil
}

// DirectoryStateTypes are the state events (with an empty state key) a
// published room directory entry is made of.
var DirectoryStateTypes = []string{
	"m.room.create", "m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar",
	"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
}

// DirectoryState returns, for each of the rooms, the PDUs of its current
// DirectoryStateTypes events by type.
func (db *DB) DirectoryState(ctx context.Context, roomIDs []id.RoomID) (map[id.RoomID]map[string][]byte, error) {
	out := make(map[id.RoomID]map[string][]byte, len(roomIDs))
	if len(roomIDs) == 0 {
		return out, nil
	}
	var args []any
	list := func(n int) string {
		ph := make([]string, n)
		for i := range ph {
			ph[i] = fmt.Sprintf("$%d", len(args)+i+1)
		}
		return strings.Join(ph, ",")
	}
	rooms := list(len(roomIDs))
	for _, r := range roomIDs {
		args = append(args, r)
	}
	types := list(len(DirectoryStateTypes))
	for _, t := range DirectoryStateTypes {
		args = append(args, t)
	}
	rows, err := db.Query(ctx, `SELECT s.room_id, s.type, e.pdu FROM current_state s JOIN events e ON e.event_id = s.event_id
		WHERE s.room_id IN (`+rooms+`) AND s.type IN (`+types+`) AND s.state_key = ''`, args...)
	if err != nil {
		return nil, fmt.Errorf("directory state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var roomID id.RoomID
		var evtType, pdu string
		if err := rows.Scan(&roomID, &evtType, &pdu); err != nil {
			return nil, fmt.Errorf("directory state: %w", err)
		}
		if out[roomID] == nil {
			out[roomID] = map[string][]byte{}
		}
		out[roomID][evtType] = []byte(pdu)
	}
	return out, rows.Err()
}

// UserDirectoryEntry is one user found in the user directory.
type UserDirectoryEntry struct {
	UserID      id.UserID
	DisplayName string
	AvatarURL   string
}

// SearchUserDirectory finds up to limit users visible to requester whose
// user ID or display name contains term, case-insensitively, and reports
// whether more matched. Visible (spec: "User directory") are the users
// joined to a room the requester is joined to, or to a room with a public
// join rule or world-readable history. Deactivated accounts are never
// found. Users sharing a room with the requester come first, then those
// whose localpart or display name starts with the term, then those with a
// display name and an avatar.
func (db *DB) SearchUserDirectory(ctx context.Context, requester id.UserID, term string, limit int) ([]UserDirectoryEntry, bool, error) {
	term = strings.ToLower(term)
	displayName := db.jsonText("dn.value")
	avatar := db.jsonText("av.value")
	query := `
		WITH my_rooms AS (
			SELECT room_id FROM current_state
			WHERE state_key = $1 AND type = 'm.room.member' AND membership = 'join'
		), open_rooms AS (
			SELECT s.room_id FROM current_state s JOIN events e ON e.event_id = s.event_id
			WHERE s.state_key = '' AND s.type IN ('m.room.join_rules', 'm.room.history_visibility')
				AND ((s.type = 'm.room.join_rules' AND ` + db.jsonText("e.pdu", "content", "join_rule") + ` = 'public')
					OR (s.type = 'm.room.history_visibility' AND ` + db.jsonText("e.pdu", "content", "history_visibility") + ` = 'world_readable'))
		), visible AS (
			SELECT m.state_key AS user_id,
				MAX(CASE WHEN m.room_id IN (SELECT room_id FROM my_rooms) THEN 1 ELSE 0 END) AS shared
			FROM current_state m
			WHERE m.type = 'm.room.member' AND m.membership = 'join'
				AND m.room_id IN (SELECT room_id FROM my_rooms UNION SELECT room_id FROM open_rooms)
			GROUP BY m.state_key
		)
		SELECT v.user_id, ` + displayName + `, ` + avatar + `
		FROM visible v
		LEFT JOIN users u ON u.user_id = v.user_id
		LEFT JOIN profile_fields dn ON dn.user_id = v.user_id AND dn.field = 'displayname'
		LEFT JOIN profile_fields av ON av.user_id = v.user_id AND av.field = 'avatar_url'
		WHERE (u.deactivated IS NULL OR u.deactivated = false)
			AND (LOWER(v.user_id) LIKE $2 ESCAPE '\' OR LOWER(` + displayName + `) LIKE $2 ESCAPE '\')
		ORDER BY v.shared DESC,
			CASE WHEN LOWER(v.user_id) LIKE $3 ESCAPE '\' OR LOWER(` + displayName + `) LIKE $4 ESCAPE '\' THEN 0 ELSE 1 END,
			CASE WHEN ` + displayName + ` IS NULL THEN 1 ELSE 0 END,
			CASE WHEN ` + avatar + ` IS NULL THEN 1 ELSE 0 END,
			v.user_id
		LIMIT $5`
	rows, err := db.Query(ctx, query, requester, likeContains(term), "@"+likeEscape(term)+"%", likeEscape(term)+"%", limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("search user directory: %w", err)
	}
	defer rows.Close()
	out := []UserDirectoryEntry{}
	for rows.Next() {
		var e UserDirectoryEntry
		var dn, av *string
		if err := rows.Scan(&e.UserID, &dn, &av); err != nil {
			return nil, false, fmt.Errorf("search user directory: %w", err)
		}
		if dn != nil {
			e.DisplayName = *dn
		}
		if av != nil {
			e.AvatarURL = *av
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("search user directory: %w", err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// SetAppserviceRoomDirectory publishes (or unpublishes) a room in an
// appservice network's directory.
func (db *DB) SetAppserviceRoomDirectory(ctx context.Context, roomID id.RoomID, asID, networkID string, public bool) error {
	if !public {
		_, err := db.Exec(ctx, `DELETE FROM appservice_room_directory WHERE room_id = $1 AND as_id = $2 AND network_id = $3`, roomID, asID, networkID)
		return err
	}
	_, err := db.Exec(ctx, `INSERT INTO appservice_room_directory (room_id, as_id, network_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		roomID, asID, networkID)
	return err
}
