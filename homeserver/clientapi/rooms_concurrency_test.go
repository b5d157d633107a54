package clientapi_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// 50 concurrent senders into one room: every event persists once, stream
// positions are unique and increasing in depth order, and the room keeps a
// single forward extremity (its history never forks).
func TestConcurrentSendsKeepRoomLinear(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := srv.NewUser("alice")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		const senders, perSender = 50, 4
		clients := make([]*mautrix.Client, senders)
		for i := range clients {
			clients[i] = srv.NewUser(fmt.Sprintf("user%d", i))
			if _, err := clients[i].JoinRoomByID(ctx, roomID); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		sent := make(chan id.EventID, senders*perSender)
		for i, cli := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < perSender; j++ {
					resp, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage,
						&event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("%d-%d", i, j)})
					if err != nil {
						t.Error(err)
						return
					}
					sent <- resp.EventID
				}
			}()
		}
		wg.Wait()
		close(sent)
		want := map[id.EventID]bool{}
		for eid := range sent {
			want[eid] = true
		}
		if len(want) != senders*perSender {
			t.Fatalf("%d distinct event IDs, want %d", len(want), senders*perSender)
		}
		events, err := srv.HS.DB.RoomEvents(ctx, roomID, 0, 1<<62, 10000, false)
		if err != nil {
			t.Fatal(err)
		}
		var lastPos, lastDepth int64
		found := 0
		for _, e := range events {
			if e.StreamPos <= lastPos || e.Depth <= lastDepth {
				t.Fatalf("event %s at pos %d depth %d follows pos %d depth %d: order broken", e.EventID, e.StreamPos, e.Depth, lastPos, lastDepth)
			}
			lastPos, lastDepth = e.StreamPos, e.Depth
			if want[e.EventID] {
				found++
			}
		}
		if found != len(want) {
			t.Fatalf("%d of %d sent events persisted", found, len(want))
		}
		ext, err := srv.HS.DB.Extremities(ctx, roomID)
		if err != nil || len(ext) != 1 || ext[0] != events[len(events)-1].EventID {
			t.Fatalf("extremities = %v, %v; want just the last event", ext, err)
		}
	})
}

// Writes to a busy room are group-committed; a refused event in a batch
// must fail alone, never taking its neighbours down with it.
func TestGroupCommitIsolatesRefusedEvents(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := srv.NewUser("alice")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		var members, strangers []*mautrix.Client
		for i := 0; i < 10; i++ {
			m := srv.NewUser(fmt.Sprintf("member%d", i))
			if _, err := m.JoinRoomByID(ctx, roomID); err != nil {
				t.Fatal(err)
			}
			members = append(members, m)
			strangers = append(strangers, srv.NewUser(fmt.Sprintf("stranger%d", i)))
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok, refused := 0, 0
		for round := 0; round < 5; round++ {
			for i := range members {
				for _, cli := range []*mautrix.Client{members[i], strangers[i]} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						_, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "x"})
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil && strings.HasPrefix(cli.UserID.Localpart(), "member"):
							ok++
						case errors.Is(err, mautrix.MForbidden) && strings.HasPrefix(cli.UserID.Localpart(), "stranger"):
							refused++
						default:
							t.Errorf("%s: unexpected result %v", cli.UserID, err)
						}
					}()
				}
			}
		}
		wg.Wait()
		if ok != 50 || refused != 50 {
			t.Fatalf("%d accepted, %d refused; want 50 and 50", ok, refused)
		}
		events, err := srv.HS.DB.RoomEvents(ctx, roomID, 0, 1<<62, 10000, false)
		if err != nil {
			t.Fatal(err)
		}
		messages := 0
		for _, e := range events {
			if e.Type == event.EventMessage.Type {
				messages++
				if !strings.HasPrefix(e.Sender.Localpart(), "member") {
					t.Fatalf("a refused sender's event was stored: %s", e.Sender)
				}
			}
		}
		ext, _ := srv.HS.DB.Extremities(ctx, roomID)
		if messages != 50 || len(ext) != 1 {
			t.Fatalf("%d messages stored, %d extremities", messages, len(ext))
		}
	})
}
