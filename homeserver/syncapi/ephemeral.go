package syncapi

import (
	"context"
	"encoding/json"
	"slices"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/typing"
)

// ephemeral fills the ephemeral section of joined rooms (spec: m.typing
// and m.receipt in rooms.join.*.ephemeral) and adds joined rooms whose only
// news is ephemeral, so resp.empty() sees typing- or receipt-only changes
// and a woken long-poll answers them:
//
//   - m.receipt with the receipts written in (since, upto]; on an initial
//     or full_state sync, and for a room joined in this window, every
//     current receipt. m.read.private receipts only reach their owner.
//   - m.typing, with the room's current typing users, when the room's
//     typing set changed after the token's Typing serial; on an initial or
//     full_state sync, and for a room joined in this window, when someone
//     is typing.
//
// It also puts the typing serial into next_batch; it reads the serial
// before the typing sets, so a change racing with this sync is sent again
// next time rather than lost. tracker may be nil (no typing).
func (s *Syncer) ephemeral(ctx context.Context, req Request, resp *Response, since, upto int64, joined map[id.RoomID]bool, tracker *typing.Tracker) error {
	initial := since == 0 || req.FullState
	if tracker != nil {
		resp.next.Typing = tracker.Serial()
	}
	roomFilter := req.Filter.Room
	if roomFilter == nil {
		roomFilter = &mautrix.RoomFilter{}
	}
	ef := roomFilter.Ephemeral
	if ef == nil {
		ef = &mautrix.FilterPart{}
	}
	var rooms []id.RoomID
	for roomID := range joined {
		if roomWanted(roomFilter, roomID) && ephemeralRoomWanted(ef, roomID) {
			rooms = append(rooms, roomID)
		}
	}
	if len(rooms) == 0 {
		return nil
	}
	slices.Sort(rooms)
	fresh := map[id.RoomID]bool{}
	if !initial {
		changes, err := s.DB.MembershipChanges(ctx, req.User, since, upto)
		if err != nil {
			return err
		}
		// As compute does: a room whose latest membership change in the
		// window is a join starts afresh.
		for _, m := range changes {
			fresh[m.RoomID] = m.Membership == string(event.MembershipJoin)
		}
	}
	out := map[id.RoomID][]json.RawMessage{}

	if ephemeralTypeWanted(ef, event.EphemeralEventReceipt.Type) {
		var receipts []storage.Receipt
		if initial {
			all, err := s.DB.ReceiptsSince(ctx, rooms, req.User, 0, upto)
			if err != nil {
				return err
			}
			receipts = all
		} else {
			var freshRooms, otherRooms []id.RoomID
			for _, roomID := range rooms {
				if fresh[roomID] {
					freshRooms = append(freshRooms, roomID)
				} else {
					otherRooms = append(otherRooms, roomID)
				}
			}
			news, err := s.DB.ReceiptsSince(ctx, otherRooms, req.User, since, upto)
			if err != nil {
				return err
			}
			current, err := s.DB.ReceiptsSince(ctx, freshRooms, req.User, 0, upto)
			if err != nil {
				return err
			}
			receipts = append(news, current...)
		}
		byRoom := storage.GroupReceipts(receipts)
		for _, roomID := range rooms {
			content := byRoom[roomID]
			if content == nil {
				continue
			}
			raw, err := json.Marshal(map[string]any{"type": event.EphemeralEventReceipt.Type, "content": content})
			if err != nil {
				return err
			}
			out[roomID] = append(out[roomID], raw)
		}
	}

	if tracker != nil && ephemeralTypeWanted(ef, event.EphemeralEventTyping.Type) {
		var changed map[id.RoomID]bool
		unplaced := false
		if !initial {
			var list []id.RoomID
			list, unplaced = tracker.ChangedSince(req.Since.Typing)
			changed = make(map[id.RoomID]bool, len(list))
			for _, r := range list {
				changed[r] = true
			}
		}
		for _, roomID := range rooms {
			if !initial && !unplaced && !changed[roomID] && !fresh[roomID] {
				continue
			}
			users, _ := tracker.Typing(roomID)
			switch {
			case changed[roomID]:
				// Sent even when empty: it clears what the client shows.
			case initial || fresh[roomID]:
				if len(users) == 0 {
					continue
				}
			case unplaced:
				// A token from before this process (or from another one):
				// which rooms changed is unknown. Send who types now, and
				// clear rooms that are in the response anyway; adding every
				// quiet room would answer every such sync at once.
				if _, inResponse := resp.Rooms.Join[roomID]; len(users) == 0 && !inResponse && out[roomID] == nil {
					continue
				}
			default:
				continue
			}
			raw, err := json.Marshal(map[string]any{"type": event.EphemeralEventTyping.Type, "content": event.TypingEventContent{UserIDs: users}})
			if err != nil {
				return err
			}
			out[roomID] = append(out[roomID], raw)
		}
	}

	for roomID, events := range out {
		jr := resp.Rooms.Join[roomID]
		if jr == nil {
			jr = emptyJoinedRoom()
			resp.Rooms.Join[roomID] = jr
		}
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, events...)
	}
	return nil
}

// ephemeralTypeWanted applies the ephemeral filter's types and not_types.
func ephemeralTypeWanted(f *mautrix.FilterPart, evtType string) bool {
	if f.Types != nil && !matchType(f.Types, evtType) {
		return false
	}
	return !matchType(f.NotTypes, evtType)
}

// ephemeralRoomWanted applies the ephemeral filter's rooms and not_rooms.
func ephemeralRoomWanted(f *mautrix.FilterPart, roomID id.RoomID) bool {
	if f.Rooms != nil && !slices.Contains(f.Rooms, roomID) {
		return false
	}
	return !slices.Contains(f.NotRooms, roomID)
}
