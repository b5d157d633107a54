package clientapi_test

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestHistoryVisibility(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		sendText(t, alice, roomID, "before bob")

		// Carol, never a member, may not read the history.
		_, err = carol.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 10)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)

		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, roomID, "after bob")
		msgs, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		got := bodies(msgs.Chunk)
		if !slices.Contains(got, "after bob") || slices.Contains(got, "before bob") {
			t.Fatalf("bob sees %q under joined visibility", got)
		}
		// The same rule holds in sync.
		sync, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(sync.Rooms.Join[roomID].Timeline.Events); slices.Contains(got, "before bob") {
			t.Fatalf("bob's sync shows %q", got)
		}

		// After leaving, bob cannot send, and does not see what came later.
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		_, err = bob.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "ghost"})
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		sendText(t, alice, roomID, "after bob left")
		msgs, err = bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(msgs.Chunk); slices.Contains(got, "after bob left") || !slices.Contains(got, "after bob") {
			t.Fatalf("bob after leaving sees %q", got)
		}
		// Bob sees his own leave, though it made him no longer a member
		// (spec: a user's own membership events are visible if the
		// membership before or after them allows it).
		ownLeave := false
		for _, evt := range msgs.Chunk {
			if evt.Type == event.StateMember && evt.GetStateKey() == string(bob.UserID) && evt.Sender == bob.UserID {
				_ = evt.Content.ParseRaw(evt.Type)
				ownLeave = ownLeave || evt.Content.AsMember().Membership == event.MembershipLeave
			}
		}
		if !ownLeave {
			t.Errorf("bob does not see his own leave in /messages")
		}
		// Incremental sync puts the room in bob's leave section.
		next, err := bob.SyncRequest(ctx, 0, sync.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if next.Rooms.Leave[roomID] == nil {
			t.Fatalf("left room missing from leave section: %+v", next.Rooms)
		}
	})
}

func TestEventSizeLimit(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	alice := srv.NewUser("alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 70000)
	for i := range big {
		big[i] = 'a'
	}
	_, err = alice.SendMessageEvent(ctx, created.RoomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: string(big)})
	mustErr(t, err, mautrix.MTooLarge, http.StatusRequestEntityTooLarge)
}
