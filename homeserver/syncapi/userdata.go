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

// toDevice returns the device's pending messages up to upto and deletes
// the ones the client acknowledged by syncing with since (spec: "Send-to-
// Device messaging": delivered until acknowledged by the next token).
func (s *Syncer) toDevice(ctx context.Context, req Request, resp *Response, since, upto int64) error {
	// Everything not yet acknowledged, not only what is newer than since:
	// a client that lost a response gets the messages again. Messages at
	// or below since were acknowledged by this very request: delete them
	// (only when there are some — a DELETE takes SQLite's write lock).
	all, err := s.DB.ToDeviceSince(ctx, req.User, req.Device, 0, upto, 0)
	if err != nil {
		return err
	}
	msgs := all
	if since > 0 {
		acked := 0
		for acked < len(all) && all[acked].StreamPos <= since {
			acked++
		}
		if acked > 0 {
			if err := s.DB.DeleteToDeviceUpTo(ctx, req.User, req.Device, since); err != nil {
				return err
			}
		}
		msgs = all[acked:]
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
