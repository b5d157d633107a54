package appservice

// Ephemeral data and to-device messages in transactions (spec: "Pushing
// ephemeral data", added in v1.13 from MSC2409; to-device messages are
// MSC4203, sent under MSC2409's unstable key as Synapse does).
//
// Receipts, presence and to-device messages take positions in the one
// stream, so a transaction carries those written in the same range
// (acked_pos, upto] as its events and the queue's cursor covers them too:
// nothing is lost or sent twice across restarts. Typing lives in memory
// (package typing) and has no stream position: each transaction carries
// the typing state of the rooms that changed since the last delivered one;
// a homeserver restart forgets it, as it forgets typing for clients.
//
// The ephemeral part is stored with the transaction when it is built
// (txn_ephemeral), because receipts and presence are overwritten in place
// and typing is not persisted: a retry must resend the same body.

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// MaxTxnEphemeral caps the receipts, presence updates and to-device
// messages of one transaction (typing is a snapshot per room and not
// counted).
const MaxTxnEphemeral = 100

// Typing is what the pusher reads of the typing tracker (*typing.Tracker).
type Typing interface {
	Serial() int64
	ChangedSince(serial int64) (rooms []id.RoomID, all bool)
	Typing(roomID id.RoomID) ([]id.UserID, int64)
}

// ReceivesEphemeral reports whether the appservice asked for ephemeral
// data and to-device messages: receive_ephemeral (spec) or MSC2409's
// unstable de.sorunome.msc2409.push_ephemeral.
func (as *AppService) ReceivesEphemeral() bool {
	return as.Registration.EphemeralEvents || as.Registration.SoruEphemeralEvents
}

// ephemeralBatch is a transaction's ephemeral part, as stored in
// txn_ephemeral and sent.
type ephemeralBatch struct {
	Ephemeral []json.RawMessage `json:"ephemeral,omitempty"`
	ToDevice  []json.RawMessage `json:"to_device,omitempty"`
	// ToDevicePos are the stream positions of ToDevice's messages, deleted
	// once the appservice acknowledges them.
	ToDevicePos []int64 `json:"to_device_pos,omitempty"`
	// The encryption extensions (MSC3202, see e2ee.go).
	DeviceLists  *deviceLists                                 `json:"device_lists,omitempty"`
	OTKCounts    map[id.UserID]map[id.DeviceID]map[string]int `json:"otk_counts,omitempty"`
	FallbackKeys map[id.UserID]map[id.DeviceID][]string       `json:"fallback_keys,omitempty"`
}

func (b *ephemeralBatch) empty() bool {
	return len(b.Ephemeral) == 0 && len(b.ToDevice) == 0 && b.DeviceLists == nil && len(b.OTKCounts) == 0
}

// typingEvent, receiptEvent and presenceEvent are the ephemeral events as
// the spec's transaction carries them: the /sync format, with room_id for
// the room-scoped ones.
type typingEvent struct {
	Type    string                   `json:"type"`
	RoomID  id.RoomID                `json:"room_id"`
	Content event.TypingEventContent `json:"content"`
}

type receiptEvent struct {
	Type    string                 `json:"type"`
	RoomID  id.RoomID              `json:"room_id"`
	Content storage.ReceiptContent `json:"content"`
}

type presenceEvent struct {
	Type    string                  `json:"type"`
	Sender  id.UserID               `json:"sender"`
	Content storage.PresenceContent `json:"content"`
}

// toDeviceEvent is a to-device message with its recipient (MSC4203).
type toDeviceEvent struct {
	Type       string          `json:"type"`
	Sender     id.UserID       `json:"sender"`
	Content    json.RawMessage `json:"content"`
	ToUserID   id.UserID       `json:"to_user_id"`
	ToDeviceID id.DeviceID     `json:"to_device_id"`
}

// gatherEphemeral collects the receipts, presence and to-device messages
// in (acked, upto] that the appservice is interested in. When there are
// more than one transaction should carry it returns a lower upto: the
// caller must leave what comes after it for the next transaction.
func gatherEphemeral(ctx context.Context, db *storage.DB, in *interest, acked, upto int64) (*ephemeralBatch, int64, error) {
	// Each read is bounded; a full page means there may be more after its
	// last position, so the range ends there.
	receipts, err := db.ReceiptsInRange(ctx, acked, upto, scanPage)
	if err != nil {
		return nil, 0, err
	}
	if len(receipts) == scanPage {
		upto = receipts[len(receipts)-1].StreamPos
	}
	presence, err := db.PresenceInRange(ctx, acked, upto, scanPage)
	if err != nil {
		return nil, 0, err
	}
	if len(presence) == scanPage {
		upto = presence[len(presence)-1].StreamPos
	}
	toDevice, err := db.ToDeviceInRange(ctx, acked, upto, scanPage)
	if err != nil {
		return nil, 0, err
	}
	if len(toDevice) == scanPage {
		upto = toDevice[len(toDevice)-1].StreamPos
	}

	// Every write has its own stream position, so positions identify the
	// items across the three kinds.
	var picked []int64
	keepReceipts := receipts[:0]
	for _, r := range receipts {
		if r.StreamPos > upto {
			break
		}
		if ok, err := in.receipt(ctx, r); err != nil {
			return nil, 0, err
		} else if ok {
			keepReceipts = append(keepReceipts, r)
			picked = append(picked, r.StreamPos)
		}
	}
	keepPresence := presence[:0]
	for _, p := range presence {
		if p.StreamPos > upto {
			break
		}
		if ok, err := in.presence(ctx, p.UserID); err != nil {
			return nil, 0, err
		} else if ok {
			keepPresence = append(keepPresence, p)
			picked = append(picked, p.StreamPos)
		}
	}
	keepToDevice := toDevice[:0]
	for _, m := range toDevice {
		if m.StreamPos > upto {
			break
		}
		// Only the appservice's own users: their devices are the
		// appservice's, and it is the one consumer that deletes them.
		if in.as.IsExclusiveUser(m.UserID) {
			keepToDevice = append(keepToDevice, m)
			picked = append(picked, m.StreamPos)
		}
	}
	if len(picked) > MaxTxnEphemeral {
		slices.Sort(picked)
		upto = picked[MaxTxnEphemeral-1]
	}

	b := &ephemeralBatch{}
	var inRange []storage.Receipt
	var roomOrder []id.RoomID
	for _, r := range keepReceipts {
		if r.StreamPos <= upto {
			inRange = append(inRange, r)
			if !slices.Contains(roomOrder, r.RoomID) {
				roomOrder = append(roomOrder, r.RoomID)
			}
		}
	}
	byRoom := storage.GroupReceipts(inRange)
	for _, roomID := range roomOrder {
		if err := b.add(receiptEvent{Type: event.EphemeralEventReceipt.Type, RoomID: roomID, Content: byRoom[roomID]}); err != nil {
			return nil, 0, err
		}
	}
	now := time.Now().UnixMilli()
	for _, p := range keepPresence {
		if p.StreamPos <= upto {
			if err := b.add(presenceEvent{Type: event.EphemeralEventPresence.Type, Sender: p.UserID, Content: p.Content(now)}); err != nil {
				return nil, 0, err
			}
		}
	}
	for _, m := range keepToDevice {
		if m.StreamPos > upto {
			continue
		}
		raw, err := json.Marshal(toDeviceEvent{Type: m.Type, Sender: m.Sender, Content: m.Content, ToUserID: m.UserID, ToDeviceID: m.DeviceID})
		if err != nil {
			return nil, 0, err
		}
		b.ToDevice = append(b.ToDevice, raw)
		b.ToDevicePos = append(b.ToDevicePos, m.StreamPos)
	}
	return b, upto, nil
}

// addTyping adds the typing state of the rooms whose typing changed after
// seen and that the appservice is interested in. A tracker that no longer
// knows which rooms changed (all) adds nothing: re-sending every room's
// typing state would flood the appservice for nothing.
func (b *ephemeralBatch) addTyping(ctx context.Context, t Typing, in *interest, seen int64) error {
	rooms, all := t.ChangedSince(seen)
	if all {
		return nil
	}
	for _, roomID := range rooms {
		ok, err := in.roomCached(ctx, roomID)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		users, _ := t.Typing(roomID)
		if users == nil {
			users = []id.UserID{}
		}
		ev := typingEvent{Type: event.EphemeralEventTyping.Type, RoomID: roomID, Content: event.TypingEventContent{UserIDs: users}}
		if err := b.add(ev); err != nil {
			return err
		}
	}
	return nil
}

func (b *ephemeralBatch) add(ev any) error {
	raw, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	b.Ephemeral = append(b.Ephemeral, raw)
	return nil
}

// receipt: receipts of rooms the appservice is interested in; private ones
// only of its own users (spec).
func (in *interest) receipt(ctx context.Context, r storage.Receipt) (bool, error) {
	if r.Type == event.ReceiptTypeReadPrivate && !in.as.IsInterestedInUser(r.UserID) {
		return false, nil
	}
	return in.roomCached(ctx, r.RoomID)
}

// presence: the presence of users in its namespaces, and of users who share
// a room it is interested in (spec: "if the data would apply contextually").
func (in *interest) presence(ctx context.Context, userID id.UserID) (bool, error) {
	if in.as.IsInterestedInUser(userID) {
		return true, nil
	}
	if v, ok := in.users[userID]; ok {
		return v, nil
	}
	rooms, err := in.db.UserRooms(ctx, userID)
	if err != nil {
		return false, err
	}
	v := false
	for _, m := range rooms {
		if m.Membership != string(event.MembershipJoin) {
			continue
		}
		if v, err = in.roomCached(ctx, m.RoomID); err != nil {
			return false, err
		} else if v {
			break
		}
	}
	if in.users == nil {
		in.users = map[id.UserID]bool{}
	}
	in.users[userID] = v
	return v, nil
}
