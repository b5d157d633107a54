package storage

import (
	"context"
	"fmt"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// SpaceRoom is what the space hierarchy (GET /rooms/{id}/hierarchy) needs
// of a room's current state.
type SpaceRoom struct {
	RoomID id.RoomID
	// State holds the PDUs of the room's current DirectoryStateTypes
	// events, and of m.room.encryption, by type.
	State map[string][]byte
	// Children are the room's current m.space.child events, unsorted and
	// unchecked.
	Children      []*Event
	JoinedMembers int64
}

// SpaceRooms loads the rooms' SpaceRoom in three queries, however many
// rooms there are, so walking a space costs a few queries per space rather
// than per child. Rooms this server has no state of are absent from the map.
func (db *DB) SpaceRooms(ctx context.Context, roomIDs []id.RoomID) (map[id.RoomID]*SpaceRoom, error) {
	summaries, err := db.DirectoryState(ctx, roomIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[id.RoomID]*SpaceRoom, len(summaries))
	known := make([]id.RoomID, 0, len(summaries))
	for roomID, state := range summaries {
		out[roomID] = &SpaceRoom{RoomID: roomID, State: state}
		known = append(known, roomID)
	}
	if len(known) == 0 {
		return out, nil
	}
	in, args := inList(known, 0)
	events, err := db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id IN (
			SELECT event_id FROM current_state WHERE room_id IN (`+in+`)
				AND (type = 'm.space.child' OR (type = 'm.room.encryption' AND state_key = '')))`, args...)
	if err != nil {
		return nil, fmt.Errorf("space rooms: %w", err)
	}
	for _, e := range events {
		r := out[e.RoomID]
		if e.Type == "m.room.encryption" {
			r.State[e.Type] = e.PDU
		} else {
			r.Children = append(r.Children, e)
		}
	}
	type joinedCount struct {
		roomID id.RoomID
		n      int64
	}
	counts, err := queryList(ctx, db, "space rooms: joined members", func(row dbutil.Scannable) (c joinedCount, err error) {
		err = row.Scan(&c.roomID, &c.n)
		return c, err
	}, `SELECT room_id, COUNT(*) FROM current_state
		WHERE type = 'm.room.member' AND membership = 'join' AND room_id IN (`+in+`) GROUP BY room_id`, args...)
	if err != nil {
		return nil, err
	}
	for _, c := range counts {
		out[c.roomID].JoinedMembers = c.n
	}
	return out, nil
}
