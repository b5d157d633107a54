package clientapi_test

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestKnockAndRestrictedJoin(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")

		// Knocking: bob asks, alice invites, bob joins.
		knockRoom, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{InitialState: []*event.Event{{
			Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = bob.JoinRoomByID(ctx, knockRoom.RoomID)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		if _, err := bob.KnockRoom(ctx, string(knockRoom.RoomID), &mautrix.ReqKnockRoom{Reason: "let me in"}); err != nil {
			t.Fatalf("knock: %v", err)
		}
		aliceSync, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		sawKnock := false
		for _, e := range aliceSync.Rooms.Join[knockRoom.RoomID].Timeline.Events {
			if e.Type == event.StateMember && e.GetStateKey() == string(bob.UserID) {
				_ = e.Content.ParseRaw(e.Type)
				sawKnock = e.Content.AsMember().Membership == event.MembershipKnock
			}
		}
		if !sawKnock {
			t.Fatal("alice does not see bob's knock")
		}
		bobSync, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if bobSync.Rooms.Knock[knockRoom.RoomID] == nil {
			t.Fatalf("bob's knock missing from his knock section: %+v", bobSync.Rooms)
		}
		if _, err := alice.InviteUser(ctx, knockRoom.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, knockRoom.RoomID); err != nil {
			t.Fatalf("join after knock+invite: %v", err)
		}

		// Restricted: members of the space may join, others may not.
		space, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		restricted, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{InitialState: []*event.Event{{
			Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{
				"join_rule": "restricted",
				"allow":     []map[string]any{{"type": "m.room_membership", "room_id": space.RoomID}},
			}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = carol.JoinRoomByID(ctx, restricted.RoomID)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		if _, err := carol.JoinRoomByID(ctx, space.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoomByID(ctx, restricted.RoomID); err != nil {
			t.Fatalf("restricted join as a space member: %v", err)
		}
	})
}

func TestRedactionAndPowerLevels(t *testing.T) {
	for _, version := range []id.RoomVersion{"10", "11", "12"} {
		t.Run("v"+string(version), func(t *testing.T) {
			srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
			alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
			created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: version})
			if err != nil {
				t.Fatal(err)
			}
			roomID := created.RoomID
			if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
				t.Fatal(err)
			}
			aliceMsg := sendText(t, alice, roomID, "alice's secret")
			bobMsg := sendText(t, bob, roomID, "bob's oops")
			// Bob may redact his own message but not alice's.
			if _, err := bob.RedactEvent(ctx, roomID, bobMsg, mautrix.ReqRedact{Reason: "typo"}); err != nil {
				t.Fatalf("self redaction: %v", err)
			}
			_, err = bob.RedactEvent(ctx, roomID, aliceMsg, mautrix.ReqRedact{})
			mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
			// Alice (power 100 / creator) may redact anyone's.
			if _, err := alice.RedactEvent(ctx, roomID, aliceMsg, mautrix.ReqRedact{}); err != nil {
				t.Fatal(err)
			}
			for _, eid := range []id.EventID{aliceMsg, bobMsg} {
				ev, err := bob.GetEvent(ctx, roomID, eid)
				if err != nil {
					t.Fatal(err)
				}
				if len(ev.Content.VeryRaw) > 2 || ev.Unsigned.RedactedBecause == nil {
					t.Fatalf("redacted event %s still has content %s (redacted_because %v)", eid, ev.Content.VeryRaw, ev.Unsigned.RedactedBecause)
				}
			}
			// Power levels: bob cannot raise himself; alice can promote him.
			var pl event.PowerLevelsEventContent
			if err := alice.StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil {
				t.Fatal(err)
			}
			pl.SetUserLevel(bob.UserID, 100)
			_, err = bob.SendStateEvent(ctx, roomID, event.StatePowerLevels, "", &pl)
			mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
			pl.SetUserLevel(bob.UserID, 50)
			if _, err := alice.SendStateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil {
				t.Fatalf("promote bob: %v", err)
			}
			if _, err := bob.SendStateEvent(ctx, roomID, event.StateRoomName, "", &event.RoomNameEventContent{Name: "Bob's now"}); err != nil {
				t.Fatalf("moderator renames room: %v", err)
			}
		})
	}
}

func TestSendIdempotency(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	alice := srv.NewUser("alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: "once"}
	first, err := alice.SendMessageEvent(ctx, created.RoomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn-1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := alice.SendMessageEvent(ctx, created.RoomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn-1"})
	if err != nil || again.EventID != first.EventID {
		t.Fatalf("retransmission gave %v, %v; want %s", again, err, first.EventID)
	}
	msgs, err := alice.Messages(ctx, created.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	if got := bodies(msgs.Chunk); len(got) != 1 {
		t.Fatalf("retransmission stored twice: %q", got)
	}
	// Our own device sees its transaction ID.
	ev, err := alice.GetEvent(ctx, created.RoomID, first.EventID)
	if err != nil || ev.Unsigned.TransactionID != "txn-1" {
		t.Fatalf("transaction_id = %q, %v", ev.Unsigned.TransactionID, err)
	}
}

func TestProfileChangeReachesRoomsAndMembersAt(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		before, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		if err := bob.SetDisplayName(ctx, "Bobby"); err != nil {
			t.Fatal(err)
		}
		members, err := alice.JoinedMembers(ctx, roomID)
		if err != nil || members.Joined[bob.UserID].DisplayName != "Bobby" {
			t.Fatalf("bob's room display name after profile change = %+v, %v", members.Joined[bob.UserID], err)
		}
		// /members?at= the earlier token: bob had not joined yet.
		old, err := alice.Members(ctx, roomID, mautrix.ReqMembers{At: before.NextBatch})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range old.Chunk {
			if e.GetStateKey() == string(bob.UserID) {
				t.Fatalf("members at an earlier token include bob: %+v", e)
			}
		}
		now, err := alice.Members(ctx, roomID, mautrix.ReqMembers{Membership: event.MembershipJoin})
		if err != nil || len(now.Chunk) != 2 {
			t.Fatalf("current joined members = %d, %v", len(now.Chunk), err)
		}

		// The profile change says what it replaced (unsigned.replaces_state
		// and prev_content): how clients tell it from a join.
		after, err := alice.SyncRequest(ctx, 0, before.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		var join, change *event.Event
		for _, e := range after.Rooms.Join[roomID].Timeline.Events {
			if e.Type == event.StateMember && e.GetStateKey() == string(bob.UserID) {
				if join == nil {
					join = e
				} else {
					change = e
				}
			}
		}
		if join == nil || change == nil {
			t.Fatalf("bob's join and profile change not in the timeline: %+v", after.Rooms.Join[roomID].Timeline.Events)
		}
		if join.Unsigned.PrevContent != nil || join.Unsigned.ReplacesState != "" {
			t.Errorf("bob's first membership has prev_content %+v, replaces_state %q", join.Unsigned.PrevContent, join.Unsigned.ReplacesState)
		}
		if change.Unsigned.ReplacesState != join.ID {
			t.Errorf("replaces_state = %q, want the join %s", change.Unsigned.ReplacesState, join.ID)
		}
		if prev := change.Unsigned.PrevContent; prev == nil || prev.Raw["membership"] != "join" || prev.Raw["displayname"] == "Bobby" {
			t.Errorf("prev_content = %+v, want the join's content", prev)
		}
	})
}
