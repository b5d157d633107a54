package rooms

import (
	"math"
	"math/rand/v2"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// VisibleRanges must say exactly what CanSee says, position by position,
// whatever the user's memberships and the room's history visibility did.
func TestVisibleRangesMatchCanSee(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	memberships := []event.Membership{event.MembershipJoin, event.MembershipLeave, event.MembershipInvite, event.MembershipBan, event.MembershipKnock}
	visibilities := []event.HistoryVisibility{event.HistoryVisibilityShared, event.HistoryVisibilityJoined,
		event.HistoryVisibilityInvited, event.HistoryVisibilityWorldReadable, ""}
	const end = 60
	for trial := range 2000 {
		h := &History{loadedHV: true}
		pos := int64(0)
		for range rng.IntN(6) {
			pos += 1 + rng.Int64N(8)
			h.memberships = append(h.memberships, storage.Membership{StreamPos: pos, Membership: string(memberships[rng.IntN(len(memberships))])})
		}
		pos = 0
		for range rng.IntN(4) {
			pos += 1 + rng.Int64N(12)
			h.visibility = append(h.visibility, hvChange{pos: pos, hv: visibilities[rng.IntN(len(visibilities))]})
		}
		if n := len(h.memberships); n > 0 {
			h.currentlyJoined = h.memberships[n-1].Membership == string(event.MembershipJoin)
		}
		ranges := h.VisibleRanges()
		in := func(p int64) bool {
			for _, r := range ranges {
				if r.From <= p && p <= r.To {
					return true
				}
			}
			return false
		}
		for p := int64(0); p <= end; p++ {
			if h.CanSee(p) != in(p) {
				t.Fatalf("trial %d: position %d: CanSee %v, ranges %v (memberships %+v, visibility %+v)",
					trial, p, h.CanSee(p), ranges, h.memberships, h.visibility)
			}
		}
		if h.CanSee(math.MaxInt64) != in(math.MaxInt64) {
			t.Fatalf("trial %d: the future: CanSee %v, ranges %v", trial, h.CanSee(math.MaxInt64), ranges)
		}
		for i := 1; i < len(ranges); i++ {
			if ranges[i].From <= ranges[i-1].To+1 {
				t.Fatalf("trial %d: ranges overlap or touch: %v", trial, ranges)
			}
		}
	}
}
