package appservice

// End-to-bridge encryption (MSC3202): an appservice that opts in with
// org.matrix.msc3202 gets, in its transactions, the device-list changes
// that concern its users and the one-time key counts and unused fallback
// key algorithms of its devices, which a client would read from /sync.
// The keys are sent under MSC3202's unstable names, as Synapse does and
// mautrix-go reads them.
//
// Device lists follow the stream: a transaction covering (acked, upto]
// reports the device-list changes and memberships in that range, judged
// by the current room state when it is built, like /sync's device_lists
// (syncapi.DeviceListChanges), but for all of the appservice's users at
// once: changed lists users who share a joined room with one of them, left
// those who shared one and share none now.
//
// Key counts have no stream position (a claim changes them): the worker
// reads the key state of the appservice's devices and sends the devices
// whose state differs from what the appservice last acknowledged. That
// memory is the worker's; after a restart or a takeover by another process
// the first transaction carries every device, once. Uploads and claims
// wake the pusher through the notifier as data outside the stream (like
// typing), and the worker reads the key state when it wakes without a new
// stream position, and at least every leaseRenew: not on every event,
// since the read covers all of the appservice's users. A claim made by
// another homeserver process, or in the same instant as an event, is
// therefore seen within leaseRenew.
//
// Both are stored with the transaction (txn_ephemeral) like the ephemeral
// data, so a retry resends the same body.

import (
	"context"
	"maps"
	"slices"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// MaxTxnKeyDevices caps the devices whose key counts one transaction
// carries; a bridge usually has one (its bot's).
const MaxTxnKeyDevices = 1000

// signedCurve25519 is the one-time key algorithm Olm uses; its count is
// always sent, even at zero, as /sync does.
const signedCurve25519 = "signed_curve25519"

// ReceivesE2EE reports whether the appservice asked for device lists and
// key counts (org.matrix.msc3202 in its registration).
func (as *AppService) ReceivesE2EE() bool { return as.Registration.MSC3202 }

// deviceLists is the transaction's org.matrix.msc3202.device_lists.
type deviceLists struct {
	Changed []id.UserID `json:"changed"`
	Left    []id.UserID `json:"left"`
}

// keyState is one device's key counts as sent to the appservice.
type keyState struct {
	OTKs     map[string]int
	Fallback []string
}

type deviceRef struct {
	user   id.UserID
	device id.DeviceID
}

// gatherDeviceLists returns the device-list changes of (acked, upto] that
// concern the appservice's users, or nil when there are none.
func gatherDeviceLists(ctx context.Context, db *storage.DB, in *interest, acked, upto int64) (*deviceLists, error) {
	if upto <= acked {
		return nil, nil
	}
	// Changes restricted to one observer (user-signing signatures) are
	// left out: an appservice's users cross-sign no one in practice.
	rows, err := db.DeviceListChanges(ctx, "", acked, upto)
	if err != nil {
		return nil, err
	}
	memberships, err := db.MembershipsInRange(ctx, acked, upto)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 && len(memberships) == 0 {
		return nil, nil
	}
	sure := map[id.UserID]bool{}
	maybeChanged := map[id.UserID]bool{}
	maybeLeft := map[id.UserID]bool{}
	for _, r := range rows {
		if in.as.IsInterestedInUser(r.UserID) {
			sure[r.UserID] = true
		} else {
			maybeChanged[r.UserID] = true
		}
	}
	type roomUser struct {
		room id.RoomID
		user id.UserID
	}
	last := map[roomUser]string{}
	var order []roomUser
	for _, m := range memberships {
		ru := roomUser{m.RoomID, m.UserID}
		if _, ok := last[ru]; !ok {
			order = append(order, ru)
		}
		last[ru] = m.Membership
	}
	for _, ru := range order {
		var target map[id.UserID]bool
		switch event.Membership(last[ru]) {
		case event.MembershipJoin:
			target = maybeChanged
		case event.MembershipLeave, event.MembershipBan:
			target = maybeLeft
		default:
			continue
		}
		if in.as.IsInterestedInUser(ru.user) {
			// One of its users joined or left: every member of the room
			// is new to it, or may be gone.
			members, err := in.db.RoomMembers(ctx, ru.room, string(event.MembershipJoin))
			if err != nil {
				return nil, err
			}
			for _, m := range members {
				target[m.UserID] = true
			}
			continue
		}
		// Someone else joined or left a room where its users are.
		if ok, err := in.hasUserJoined(ctx, ru.room); err != nil {
			return nil, err
		} else if ok {
			target[ru.user] = true
		}
	}
	out := &deviceLists{Changed: []id.UserID{}, Left: []id.UserID{}}
	for u := range maybeChanged {
		if sure[u] || in.as.IsInterestedInUser(u) {
			continue
		}
		if ok, err := in.sharesRoom(ctx, u); err != nil {
			return nil, err
		} else if ok {
			sure[u] = true
		}
	}
	for u := range maybeLeft {
		if sure[u] || in.as.IsInterestedInUser(u) {
			continue
		}
		if ok, err := in.sharesRoom(ctx, u); err != nil {
			return nil, err
		} else if !ok {
			out.Left = append(out.Left, u)
		}
	}
	out.Changed = slices.Sorted(maps.Keys(sure))
	slices.Sort(out.Left)
	if len(out.Changed) == 0 && len(out.Left) == 0 {
		return nil, nil
	}
	return out, nil
}

// hasUserJoined reports whether one of the appservice's users is joined to
// the room now.
func (in *interest) hasUserJoined(ctx context.Context, roomID id.RoomID) (bool, error) {
	if v, ok := in.joined[roomID]; ok {
		return v, nil
	}
	members, err := in.db.RoomMembers(ctx, roomID, string(event.MembershipJoin))
	if err != nil {
		return false, err
	}
	v := slices.ContainsFunc(members, func(m storage.Membership) bool { return in.as.IsInterestedInUser(m.UserID) })
	if in.joined == nil {
		in.joined = map[id.RoomID]bool{}
	}
	in.joined[roomID] = v
	return v, nil
}

// sharesRoom reports whether userID is joined to a room where one of the
// appservice's users is joined.
func (in *interest) sharesRoom(ctx context.Context, userID id.UserID) (bool, error) {
	rooms, err := in.db.UserRooms(ctx, userID)
	if err != nil {
		return false, err
	}
	for _, m := range rooms {
		if m.Membership != string(event.MembershipJoin) {
			continue
		}
		if ok, err := in.hasUserJoined(ctx, m.RoomID); err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// readKeyState reads the key state of the appservice's devices.
func readKeyState(ctx context.Context, db *storage.DB, as *AppService) (map[deviceRef]keyState, error) {
	devices, err := db.AppserviceDeviceKeys(ctx, as.ID(), as.sender, MaxTxnKeyDevices)
	if err != nil {
		return nil, err
	}
	out := make(map[deviceRef]keyState, len(devices))
	for _, d := range devices {
		if _, ok := d.OTKs[signedCurve25519]; !ok {
			d.OTKs[signedCurve25519] = 0
		}
		out[deviceRef{d.UserID, d.DeviceID}] = keyState{OTKs: d.OTKs, Fallback: d.Fallback}
	}
	return out, nil
}

// keyChanges reads the key state of an appservice with MSC3202 when it may
// have changed (see the top of the file) and returns it with the devices
// that the appservice has not seen in that state.
func (w *worker) keyChanges(ctx context.Context, as *AppService, cur int64) (map[deviceRef]keyState, []deviceRef, error) {
	if !as.ReceivesE2EE() {
		w.keysSent = nil
		return nil, nil, nil
	}
	woken := cur == w.keysCur // by something outside the stream
	w.keysCur = cur
	if w.keysSent != nil && !woken && time.Since(w.keysRead) < leaseRenew {
		return nil, nil, nil
	}
	keys, err := readKeyState(ctx, w.p.db, as)
	if err != nil {
		return nil, nil, err
	}
	w.keysRead = time.Now()
	changed := changedKeys(keys, w.keysSent)
	if w.keysSent == nil && len(changed) == 0 {
		w.keysSent = map[deviceRef]keyState{} // nothing to tell
	}
	return keys, changed, nil
}

// changedKeys returns the devices of now whose state differs from sent.
func changedKeys(now, sent map[deviceRef]keyState) []deviceRef {
	var out []deviceRef
	for ref, s := range now {
		old, ok := sent[ref]
		if !ok || !maps.Equal(old.OTKs, s.OTKs) || !slices.Equal(old.Fallback, s.Fallback) {
			out = append(out, ref)
		}
	}
	return out
}

// addKeys adds the key state of devices to the batch.
func (b *ephemeralBatch) addKeys(now map[deviceRef]keyState, devices []deviceRef) {
	for _, ref := range devices {
		s := now[ref]
		if b.OTKCounts == nil {
			b.OTKCounts = map[id.UserID]map[id.DeviceID]map[string]int{}
			b.FallbackKeys = map[id.UserID]map[id.DeviceID][]string{}
		}
		if b.OTKCounts[ref.user] == nil {
			b.OTKCounts[ref.user] = map[id.DeviceID]map[string]int{}
			b.FallbackKeys[ref.user] = map[id.DeviceID][]string{}
		}
		b.OTKCounts[ref.user][ref.device] = s.OTKs
		b.FallbackKeys[ref.user][ref.device] = s.Fallback
	}
}

// keysSentWith records the key state a delivered transaction carried.
func (w *worker) keysSentWith(b *ephemeralBatch) {
	if len(b.OTKCounts) == 0 {
		return
	}
	if w.keysSent == nil {
		w.keysSent = map[deviceRef]keyState{}
	}
	for user, devices := range b.OTKCounts {
		for device, counts := range devices {
			w.keysSent[deviceRef{user, device}] = keyState{OTKs: counts, Fallback: b.FallbackKeys[user][device]}
		}
	}
}
