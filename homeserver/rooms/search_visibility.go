package rooms

import (
	"context"
	"math"
	"slices"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Searching many rooms at once (server-side search) needs the History of
// each, and needs it as ranges of stream positions that SQL can filter
// on, rather than one CanSee per event read.

// HistoriesFor is HistoryFor for many rooms, in two queries whatever their
// number.
func (s *Service) HistoriesFor(ctx context.Context, roomIDs []id.RoomID, userID id.UserID) (map[id.RoomID]*History, error) {
	changes, err := s.db.MembershipChanges(ctx, userID, 0, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	hvEvents, err := s.db.StateEventsOfTypeIn(ctx, roomIDs, event.StateHistoryVisibility.Type, "")
	if err != nil {
		return nil, err
	}
	out := make(map[id.RoomID]*History, len(roomIDs))
	for _, r := range roomIDs {
		out[r] = &History{loadedHV: true}
	}
	for _, m := range changes {
		if h := out[m.RoomID]; h != nil {
			h.memberships = append(h.memberships, m)
		}
	}
	for _, e := range hvEvents {
		if h := out[e.RoomID]; h != nil {
			h.visibility = append(h.visibility, hvChange{pos: e.StreamPos,
				hv: event.HistoryVisibility(gjson.GetBytes(e.PDU, "content.history_visibility").Str)})
		}
	}
	for _, h := range out {
		if n := len(h.memberships); n > 0 {
			h.currentlyJoined = h.memberships[n-1].Membership == string(event.MembershipJoin)
		}
	}
	return out, nil
}

// VisibleRanges returns the stream positions whose events the user may
// see, as sorted, disjoint, inclusive ranges: exactly the positions where
// CanSee is true. CanSee depends on the user's membership at the event and
// the history visibility before it, which change only at the positions of
// the user's membership events and of history_visibility events; between
// two such positions it is constant, so probing each position and one
// point of each gap between them finds every range.
func (h *History) VisibleRanges() []storage.PosRange {
	var breaks []int64
	for _, m := range h.memberships {
		breaks = append(breaks, m.StreamPos)
	}
	h.visibilityAt(0) // loads the changes if HistoryFor made h
	for _, c := range h.visibility {
		breaks = append(breaks, c.pos)
	}
	slices.Sort(breaks)
	breaks = slices.Compact(breaks)

	var out []storage.PosRange
	add := func(from, to int64) {
		if from > to || !h.CanSee(from) {
			return
		}
		if n := len(out); n > 0 && out[n-1].To == from-1 {
			out[n-1].To = to
			return
		}
		out = append(out, storage.PosRange{From: from, To: to})
	}
	next := int64(0)
	for _, b := range breaks {
		add(next, b-1)
		add(b, b)
		next = b + 1
	}
	add(next, math.MaxInt64)
	return out
}
