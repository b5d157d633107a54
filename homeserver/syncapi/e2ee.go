package syncapi

import (
	"context"
	"slices"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// signedCurve25519 is the one-time key algorithm Olm uses. Its count is
// always reported, even at zero: clients written against Synapse take a
// missing count for "unchanged" and never top their keys up.
const signedCurve25519 = "signed_curve25519"

// e2ee fills the end-to-end encryption extensions of /sync: device_lists
// on incremental syncs, and the device's one-time key counts and unused
// fallback key algorithms on every sync.
func (s *Syncer) e2ee(ctx context.Context, req Request, resp *Response, since, upto int64) error {
	if req.Since != nil {
		changed, left, err := s.DeviceListChanges(ctx, req.User, since, upto)
		if err != nil {
			return err
		}
		resp.DeviceLists["changed"], resp.DeviceLists["left"] = changed, left
	}
	if req.Device == "" {
		return nil // an appservice without a device has no keys
	}
	counts, err := s.DB.OneTimeKeyCounts(ctx, req.User, req.Device)
	if err != nil {
		return err
	}
	if _, ok := counts[signedCurve25519]; !ok {
		counts[signedCurve25519] = 0
	}
	resp.OTKCounts = counts
	if resp.FallbackKeyTypes, err = s.DB.UnusedFallbackKeyTypes(ctx, req.User, req.Device); err != nil {
		return err
	}
	return nil
}

// DeviceListChanges answers, for user, "whose device lists should I fetch
// again, and whom may I stop tracking" between two stream positions (spec:
// "Tracking the device list for a user"; /sync device_lists and
// /keys/changes):
//
//   - changed: users sharing a joined room with user now who changed their
//     device or cross-signing keys in (since, upto], user themselves
//     included; users who started to share a room with user in that window
//     (either joined a room of user's, or user joined theirs: user's list
//     of their devices may be stale); and users whose master key user
//     signed with their user-signing key (only user sees that signature).
//   - left: users who shared a room with user in that window and share none
//     now.
//
// Sharing is judged by current room state. A new shared room with someone
// who shared another room already still puts them in changed, which the
// spec allows.
func (s *Syncer) DeviceListChanges(ctx context.Context, user id.UserID, since, upto int64) (changed, left []id.UserID, err error) {
	changed, left = []id.UserID{}, []id.UserID{}
	if since >= upto {
		return changed, left, nil
	}
	rows, err := s.DB.DeviceListChanges(ctx, user, since, upto)
	if err != nil {
		return nil, nil, err
	}
	// Candidates for changed, and for left, still to be checked against
	// current sharing.
	maybeChanged := map[id.UserID]bool{}
	maybeLeft := map[id.UserID]bool{}
	sure := map[id.UserID]bool{}
	for _, r := range rows {
		switch {
		case r.Observer == user || r.UserID == user:
			sure[r.UserID] = true
		default:
			maybeChanged[r.UserID] = true
		}
	}

	// The user's own joins and leaves: every member of a room they joined
	// is new to them, every member of a room they left may be gone.
	own, err := s.DB.MembershipChanges(ctx, user, since, upto)
	if err != nil {
		return nil, nil, err
	}
	latest := map[id.RoomID]string{}
	for _, m := range own {
		latest[m.RoomID] = m.Membership
	}
	for roomID, membership := range latest {
		var target map[id.UserID]bool
		switch event.Membership(membership) {
		case event.MembershipJoin:
			target = maybeChanged
		case event.MembershipLeave, event.MembershipBan:
			target = maybeLeft
		default:
			continue
		}
		members, err := s.DB.RoomMembers(ctx, roomID, string(event.MembershipJoin))
		if err != nil {
			return nil, nil, err
		}
		for _, m := range members {
			target[m.UserID] = true
		}
	}

	// Others joining and leaving the rooms the user is in.
	others, err := s.DB.RoommateMembershipChanges(ctx, user, since, upto)
	if err != nil {
		return nil, nil, err
	}
	type roomUser struct {
		room id.RoomID
		user id.UserID
	}
	last := map[roomUser]string{}
	for _, m := range others {
		last[roomUser{m.RoomID, m.UserID}] = m.Membership
	}
	for ru, membership := range last {
		switch event.Membership(membership) {
		case event.MembershipJoin:
			maybeChanged[ru.user] = true
		case event.MembershipLeave, event.MembershipBan:
			maybeLeft[ru.user] = true
		}
	}

	delete(maybeChanged, user)
	delete(maybeLeft, user)
	if len(maybeChanged) == 0 && len(maybeLeft) == 0 {
		return sortedUsers(sure), left, nil
	}
	candidates := make([]id.UserID, 0, len(maybeChanged)+len(maybeLeft))
	for u := range maybeChanged {
		candidates = append(candidates, u)
	}
	for u := range maybeLeft {
		if !maybeChanged[u] {
			candidates = append(candidates, u)
		}
	}
	shared, err := s.DB.SharedRoomUsers(ctx, user, candidates)
	if err != nil {
		return nil, nil, err
	}
	for u := range maybeChanged {
		if shared[u] {
			sure[u] = true
		}
	}
	gone := map[id.UserID]bool{}
	for u := range maybeLeft {
		if !shared[u] {
			gone[u] = true
			delete(sure, u)
		}
	}
	return sortedUsers(sure), sortedUsers(gone), nil
}

func sortedUsers(set map[id.UserID]bool) []id.UserID {
	out := make([]id.UserID, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}
