package bridge_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// TestChangePortalID: a direct chat's remote user is renamed; the portal
// takes the new ID and keeps its room and message map, both ways.
func TestChangePortalID(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		ctx := context.Background()
		kit := testkit.Start(t, testkit.WithDatabase(uri))
		network := newTestNetwork(false)
		br := startBridge(t, kit, network, nil)
		alice := kit.NewUser("alice")
		bob := bridge.RemoteUser{ID: "bob", Name: "Bob"}
		oldID, newID := "dm:bob:"+string(alice.UserID), "dm:robert:"+string(alice.UserID)
		room := directChat(t, br, network, oldID, bob, alice.UserID)
		if _, err := alice.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		p1, err := br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: oldID, Sender: bob, ID: "p1", Content: text("psst")})
		if err != nil {
			t.Fatal(err)
		}
		testkit.WaitForEvent(t, alice, room, testkit.HasBody("psst"), wait)
		// The new ID was seen before, without a room: that record goes.
		if _, err := br.Portal(ctx, newID); err != nil {
			t.Fatal(err)
		}

		moved, err := br.ChangePortalID(ctx, oldID, newID)
		if err != nil {
			t.Fatal(err)
		}
		if moved.ID != newID || moved.RoomID() != room || moved.DMUser() != alice.UserID {
			t.Errorf("moved portal %s in %s with %s, want %s in %s with %s", moved.ID, moved.RoomID(), moved.DMUser(), newID, room, alice.UserID)
		}
		if p, err := br.Portal(ctx, newID); err != nil || p != moved {
			t.Errorf("Portal(%s) = %v, %v; want the moved portal", newID, p, err)
		}
		if p, err := br.PortalByRoom(ctx, room); err != nil || p != moved {
			t.Errorf("PortalByRoom = %v, %v; want the moved portal", p, err)
		}

		// Remote → Matrix under the new ID, in the same room; the message
		// map came along (a reply to p1 points at its event).
		robert := bridge.RemoteUser{ID: "robert", Name: "Robert"}
		if _, err := br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: newID, Sender: robert, ID: "p2", ReplyTo: "p1", Content: text("it's Robert now")}); err != nil {
			t.Fatal(err)
		}
		got := testkit.WaitForEvent(t, alice, room, testkit.HasBody("it's Robert now"), wait)
		if to := got.Content.AsMessage().RelatesTo.GetReplyTo(); to != p1 {
			t.Errorf("reply after the move points at %q, want %q", to, p1)
		}
		// Matrix → remote goes to the new ID.
		send(t, alice, room, text("hi Robert"))
		network.expect(t, "r1 "+newID+" "+string(alice.UserID)+": hi Robert")

		// The bridge info follows.
		var info event.BridgeEventContent
		if err := alice.StateEvent(ctx, room, event.StateBridge, "im.switchboard://test/"+newID, &info); err != nil || info.Channel.ID != newID {
			t.Errorf("m.bridge under the new ID = %+v, %v", info, err)
		}
		var old map[string]any
		if err := alice.StateEvent(ctx, room, event.StateBridge, "im.switchboard://test/"+oldID, &old); err == nil && len(old) > 0 {
			t.Errorf("m.bridge under the old ID is still %v", old)
		}

		// The old ID has no room any more, and nothing to move.
		if _, err := br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: oldID, Sender: bob, ID: "p3", Content: text("lost")}); !errors.Is(err, bridge.ErrNoRoom) {
			t.Errorf("a message to the old ID: %v, want ErrNoRoom", err)
		}
		if _, err := br.ChangePortalID(ctx, oldID, "dm:someone:"+string(alice.UserID)); !errors.Is(err, bridge.ErrNotLinked) {
			t.Errorf("moving a portal without a room: %v, want ErrNotLinked", err)
		}
		if _, err := br.ChangePortalID(ctx, "dm:never-seen:x", "dm:other:x"); !errors.Is(err, bridge.ErrNotLinked) {
			t.Errorf("moving an unknown portal: %v, want ErrNotLinked", err)
		}

		// Onto a portal that has a room: refused, nothing changes.
		carolID := "dm:carol:" + string(alice.UserID)
		carolRoom := directChat(t, br, network, carolID, bridge.RemoteUser{ID: "carol", Name: "Carol"}, alice.UserID)
		if _, err := br.ChangePortalID(ctx, newID, carolID); !errors.Is(err, bridge.ErrAlreadyLinked) {
			t.Errorf("moving onto a bridged portal: %v, want ErrAlreadyLinked", err)
		}
		for portalID, want := range map[string]id.RoomID{newID: room, carolID: carolRoom} {
			var got sql.NullString
			if err := br.DB.QueryRow(ctx, `SELECT room_id FROM bridge_portals WHERE portal_id = $1`, portalID).Scan(&got); err != nil || id.RoomID(got.String) != want {
				t.Errorf("%s is stored with room %q (%v), want %s", portalID, got.String, err, want)
			}
		}
		if m, err := br.MessageByRemoteID(ctx, newID, "p1"); err != nil || m == nil || m.EventID != p1 {
			t.Errorf("p1 under the new ID: %+v, %v", m, err)
		}
	})
}

// directChat makes the room of a direct chat portal between a remote user
// and a Matrix user, as a network does on a private message.
func directChat(t *testing.T, br *bridge.Bridge, network *testNetwork, portalID string, remote bridge.RemoteUser, user id.UserID) id.RoomID {
	t.Helper()
	ctx := context.Background()
	ghost, err := br.Ghost(ctx, remote)
	if err != nil {
		t.Fatal(err)
	}
	portal, err := br.Portal(ctx, portalID)
	if err != nil {
		t.Fatal(err)
	}
	room, err := br.EnsureRoom(ctx, portal, &bridge.ChannelInfo{ID: portalID, Name: remote.Name},
		bridge.RoomOptions{Invite: []id.UserID{user}, DirectWith: ghost})
	if err != nil {
		t.Fatal(err)
	}
	network.expect(t, "linked "+portalID)
	return room
}
