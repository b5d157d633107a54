package syncapi

import (
	"context"
	"encoding/json"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// accountData fills global account data and the per-room account data of
// rooms already in the response (adding joined rooms whose only change is
// their account data).
func (s *Syncer) accountData(ctx context.Context, req Request, resp *Response, since, upto int64, joined map[id.RoomID]bool) error {
	global, perRoom, err := s.DB.AccountDataSince(ctx, req.User, since, upto)
	if err != nil {
		return err
	}
	for _, ad := range global {
		resp.AccountData.Events = append(resp.AccountData.Events, accountDataEvent(ad))
	}
	for roomID, list := range perRoom {
		var target *Events[json.RawMessage]
		if jr := resp.Rooms.Join[roomID]; jr != nil {
			target = &jr.AccountData
		} else if lr := resp.Rooms.Leave[roomID]; lr != nil {
			target = &lr.AccountData
		} else if joined[roomID] {
			jr := emptyJoinedRoom()
			resp.Rooms.Join[roomID] = jr
			target = &jr.AccountData
		} else {
			continue
		}
		for _, ad := range list {
			target.Events = append(target.Events, accountDataEvent(ad))
		}
	}
	return s.pushRulesAccountData(ctx, req.User, resp, since)
}

func accountDataEvent(ad storage.AccountDataEvent) json.RawMessage {
	out, _ := json.Marshal(map[string]any{"type": ad.Type, "content": ad.Content})
	return out
}

func emptyJoinedRoom() *JoinedRoom {
	return &JoinedRoom{
		State:       Events[*rooms.ClientEvent]{Events: []*rooms.ClientEvent{}},
		Timeline:    Timeline{Events: []*rooms.ClientEvent{}},
		Ephemeral:   Events[json.RawMessage]{Events: []json.RawMessage{}},
		AccountData: Events[json.RawMessage]{Events: []json.RawMessage{}},
	}
}

// maxToDevicePerSync bounds the to-device messages of one sync response
// (Synapse sends 100 too): a device back after a long time, or the target
// of a key-sharing storm, gets its backlog over several quick syncs rather
// than in one response too large for it to handle.
const maxToDevicePerSync = 100

// toDevice returns the device's pending messages up to upto, at most
// maxToDevicePerSync of them, and deletes the ones the client acknowledged
// by syncing with a token that covered them (acked: spec "Send-to-Device
// messaging": delivered until acknowledged by the next token). When some
// are left for later, next_batch says up to where they were sent.
func (s *Syncer) toDevice(ctx context.Context, req Request, resp *Response, acked, upto int64) error {
	// Delete the acknowledged ones, only when there are some (a DELETE
	// takes SQLite's write lock); then send everything not acknowledged,
	// not only what is newer than the token: a client that lost a
	// response gets the messages again.
	if acked > 0 {
		if old, err := s.DB.ToDeviceSince(ctx, req.User, req.Device, 0, acked, 1); err != nil {
			return err
		} else if len(old) > 0 {
			if err := s.DB.DeleteToDeviceUpTo(ctx, req.User, req.Device, acked); err != nil {
				return err
			}
		}
	}
	msgs, err := s.DB.ToDeviceSince(ctx, req.User, req.Device, acked, upto, maxToDevicePerSync+1)
	if err != nil {
		return err
	}
	if len(msgs) > maxToDevicePerSync {
		msgs = msgs[:maxToDevicePerSync]
		resp.next.ToDevice = msgs[len(msgs)-1].StreamPos
	}
	for _, m := range msgs {
		raw, _ := json.Marshal(m)
		resp.ToDevice.Events = append(resp.ToDevice.Events, raw)
	}
	return nil
}

// presence reports presence changes of the user and of everyone sharing a
// joined room with them.
func (s *Syncer) presence(ctx context.Context, req Request, resp *Response, since, upto int64, joined map[id.RoomID]bool) error {
	if req.Filter.Presence != nil && req.Filter.Presence.Limit < 0 {
		return nil
	}
	if changed, err := s.DB.PresenceChanged(ctx, since, upto); err != nil || !changed {
		return err
	}
	users := []id.UserID{req.User}
	for roomID := range joined {
		members, err := s.DB.RoomMembers(ctx, roomID, string(event.MembershipJoin))
		if err != nil {
			return err
		}
		for _, m := range members {
			users = append(users, m.UserID)
		}
	}
	changes, err := s.DB.PresenceSince(ctx, users, since, upto)
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	for _, p := range changes {
		raw, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": p.UserID, "content": p.Content(now)})
		resp.Presence.Events = append(resp.Presence.Events, raw)
	}
	return nil
}
