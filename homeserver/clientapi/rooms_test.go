package clientapi_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func sendText(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		t.Fatalf("send %q: %v", body, err)
	}
	return resp.EventID
}

// bodies returns the text bodies of the m.room.message events in a list.
func bodies(events []*event.Event) []string {
	var out []string
	for _, e := range events {
		if e.Type == event.EventMessage {
			_ = e.Content.ParseRaw(e.Type)
			out = append(out, e.Content.AsMessage().Body)
		}
	}
	return out
}

func TestRoomLifecycle(t *testing.T) {
	for _, version := range []id.RoomVersion{"10", "11", "12"} {
		t.Run("v"+string(version), func(t *testing.T) {
			testdb.ForEach(t, func(t *testing.T, uri string) {
				srv := hstest.Start(t, uri, nil)
				alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
				created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Tea", Topic: "Leaves", RoomVersion: version,
					Invite: []id.UserID{bob.UserID}, RoomAliasName: "tea"})
				if err != nil {
					t.Fatalf("create room: %v", err)
				}
				roomID := created.RoomID
				if version == "12" && len(roomID) != 44 {
					t.Fatalf("v12 room ID %q is not derived from the create event", roomID)
				}
				// Bob sees the invite in his initial sync, with stripped state.
				bobSync, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
				if err != nil {
					t.Fatal(err)
				}
				inv := bobSync.Rooms.Invite[roomID]
				if inv == nil {
					t.Fatalf("no invite in bob's sync: %+v", bobSync.Rooms)
				}
				foundName := false
				for _, e := range inv.State.Events {
					if e.Type == event.StateRoomName {
						foundName = true
					}
				}
				if !foundName {
					t.Fatal("invite_state lacks the room name")
				}
				// Join by alias.
				if _, err := bob.JoinRoom(ctx, "#tea:localhost", nil); err != nil {
					t.Fatalf("join by alias: %v", err)
				}
				e1 := sendText(t, alice, roomID, "hello bob")
				sendText(t, bob, roomID, "hi alice")

				// Incremental sync from bob's first token shows the room as joined with both messages.
				next, err := bob.SyncRequest(ctx, 0, bobSync.NextBatch, "", false, event.PresenceOnline)
				if err != nil {
					t.Fatal(err)
				}
				jr := next.Rooms.Join[roomID]
				if jr == nil {
					t.Fatalf("room not in bob's join section: %+v", next.Rooms)
				}
				if got := bodies(jr.Timeline.Events); len(got) != 2 || got[0] != "hello bob" || got[1] != "hi alice" {
					t.Fatalf("bob's timeline bodies = %q", got)
				}
				// /messages backwards from the end returns newest first.
				msgs, err := alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
				if err != nil {
					t.Fatal(err)
				}
				if got := bodies(msgs.Chunk); len(got) != 2 || got[0] != "hi alice" {
					t.Fatalf("messages = %q", got)
				}
				ev, err := bob.GetEvent(ctx, roomID, e1)
				if err != nil || ev.Sender != alice.UserID {
					t.Fatalf("get event = %+v, %v", ev, err)
				}
				var name event.RoomNameEventContent
				if err := bob.StateEvent(ctx, roomID, event.StateRoomName, "", &name); err != nil || name.Name != "Tea" {
					t.Fatalf("room name = %+v, %v", name, err)
				}
				members, err := alice.JoinedMembers(ctx, roomID)
				if err != nil || len(members.Joined) != 2 {
					t.Fatalf("joined members = %+v, %v", members, err)
				}
				joined, err := bob.JoinedRooms(ctx)
				if err != nil || len(joined.JoinedRooms) != 1 || joined.JoinedRooms[0] != roomID {
					t.Fatalf("joined rooms = %+v, %v", joined, err)
				}

				// Bob has no power to rename the room.
				_, err = bob.SendStateEvent(ctx, roomID, event.StateRoomName, "", &event.RoomNameEventContent{Name: "Coffee"})
				mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)

				// Kick, then ban: a banned user cannot rejoin; unban lets him.
				if _, err := alice.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "tidy"}); err != nil {
					t.Fatal(err)
				}
				_, err = bob.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "still here?"})
				mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
				if _, err := alice.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: bob.UserID}); err != nil {
					t.Fatal(err)
				}
				_, err = bob.JoinRoomByID(ctx, roomID)
				mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
				if _, err := alice.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
					t.Fatal(err)
				}
				_, err = alice.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: bob.UserID})
				if !errors.Is(err, mautrix.MBadState) {
					t.Fatalf("unbanning a user who is not banned: %v", err)
				}
			})
		})
	}
}

func TestSyncLongPollWakes(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, created.RoomID); err != nil {
			t.Fatal(err)
		}
		first, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			resp *mautrix.RespSync
			err  error
			at   time.Time
		}
		done := make(chan result, 1)
		go func() {
			resp, err := bob.SyncRequest(ctx, 20000, first.NextBatch, "", false, event.PresenceOnline)
			done <- result{resp, err, time.Now()}
		}()
		time.Sleep(200 * time.Millisecond)
		sent := time.Now()
		sendText(t, alice, created.RoomID, "wake up")
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatal(r.err)
			}
			if got := bodies(r.resp.Rooms.Join[created.RoomID].Timeline.Events); len(got) != 1 || got[0] != "wake up" {
				t.Fatalf("long-poll timeline = %q", got)
			}
			if lat := r.at.Sub(sent); lat > 2*time.Second {
				t.Fatalf("long-poll answered %v after the send", lat)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("long-poll was not woken by a new message")
		}
	})
}

func TestMessagesPagination(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	alice := srv.NewUser("alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		sendText(t, alice, created.RoomID, fmt.Sprintf("m%d", i))
	}
	var got []string
	from := ""
	for page := 0; page < 20; page++ {
		resp, err := alice.Messages(ctx, created.RoomID, from, "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, bodies(resp.Chunk)...)
		if resp.End == "" {
			break
		}
		from = resp.End
	}
	if strings.Join(got, ",") != "m5,m4,m3,m2,m1" {
		t.Fatalf("paged backwards through %q", got)
	}
	// And forwards from the start.
	fwd, err := alice.Messages(ctx, created.RoomID, "", "", mautrix.DirectionForward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 2)
	if err != nil || strings.Join(bodies(fwd.Chunk), ",") != "m1,m2" || fwd.End == "" {
		t.Fatalf("forward page = %q end %q, %v", bodies(fwd.Chunk), fwd.End, err)
	}
}
