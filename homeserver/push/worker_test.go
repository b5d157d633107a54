package push

import (
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	"fmt"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/notifier"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// fakeRoom is a room's current state without the rooms service: members
// and power levels.
type fakeRoom struct {
	state map[storage.StateKey]*pdu.PDU
	pl    *event.PowerLevelsEventContent
}

func (f *fakeRoom) State(context.Context, id.RoomID) (map[storage.StateKey]*pdu.PDU, id.RoomVersion, error) {
	return f.state, id.RoomV11, nil
}

func (f *fakeRoom) PowerLevels(context.Context, id.RoomID) (*event.PowerLevelsEventContent, error) {
	return f.pl, nil
}

// workerRoom creates n local users joined to one room (state in memory,
// accounts in the database) and a worker over them.
func workerRoom(tb testing.TB, uri string, n int) (*Service, *storage.DB, id.RoomID) {
	tb.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, uri, tb.TempDir(), 0, zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	const roomID = id.RoomID("!bench:localhost")
	sender := id.UserID("@sender:localhost")
	if err := db.InsertRoom(ctx, &storage.Room{RoomID: roomID, Version: id.RoomV11, Creator: sender, CreatedTS: 1}); err != nil {
		tb.Fatal(err)
	}
	room := &fakeRoom{state: map[storage.StateKey]*pdu.PDU{}, pl: &event.PowerLevelsEventContent{Users: map[id.UserID]int{sender: 100}}}
	for i := range n {
		u := id.UserID(fmt.Sprintf("@user%d:localhost", i))
		if i == 0 {
			u = sender
		}
		if err := db.CreateUser(ctx, &storage.User{UserID: u}); err != nil {
			tb.Fatal(err)
		}
		content, _ := json.Marshal(map[string]any{"membership": "join", "displayname": fmt.Sprintf("User %d", i)})
		room.state[storage.StateKey{Type: event.StateMember.Type, StateKey: string(u)}] = &pdu.PDU{Content: jsontext.Value(content)}
	}
	s := NewService(db, room, notifier.New(nil), "localhost", zerolog.Nop(), nil)
	if ok, err := db.ClaimPushWorker(ctx, s.owner, 0, 1<<62); err != nil || !ok {
		tb.Fatalf("claim: %v %v", ok, err)
	}
	return s, db, roomID
}

// sendMessage stores a message from the room's first member.
func sendMessage(tb testing.TB, db *storage.DB, roomID id.RoomID, content map[string]any) *storage.Event {
	tb.Helper()
	ctx := context.Background()
	raw, _ := json.Marshal(map[string]any{"type": "m.room.message", "sender": "@sender:localhost", "content": content})
	var e *storage.Event
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		pos, err := db.AllocStreamPos(ctx, 1)
		if err != nil {
			return err
		}
		e = &storage.Event{StreamPos: pos, EventID: id.EventID(fmt.Sprintf("$e%d", pos)), RoomID: roomID, Type: "m.room.message",
			Sender: "@sender:localhost", Depth: pos, OriginServerTS: 1, StateBefore: 1, StateAfter: 1, PDU: raw}
		return db.InsertEvent(ctx, e)
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func TestWorkerEvaluatesEachMember(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		s, db, roomID := workerRoom(t, uri, 5)
		ctx := context.Background()
		// A bridge ghost in the room is not evaluated.
		if err := db.CreateUser(ctx, &storage.User{UserID: "@ghost:localhost", AppserviceID: "bridge"}); err != nil {
			t.Fatal(err)
		}
		content, _ := json.Marshal(map[string]any{"membership": "join"})
		s.rooms.(*fakeRoom).state[storage.StateKey{Type: event.StateMember.Type, StateKey: "@ghost:localhost"}] = &pdu.PDU{Content: jsontext.Value(content)}

		e := sendMessage(t, db, roomID, map[string]any{"msgtype": "m.text", "body": "hi", "m.mentions": map[string]any{"user_ids": []string{"@user2:localhost"}}})
		if caughtUp, err := s.evaluate(ctx); err != nil || !caughtUp {
			t.Fatalf("evaluate: %v %v", caughtUp, err)
		}
		for _, u := range []id.UserID{"@user1:localhost", "@user2:localhost", "@user3:localhost", "@user4:localhost", "@sender:localhost", "@ghost:localhost"} {
			notes, err := db.Notifications(ctx, u, 0, 10, false)
			if err != nil {
				t.Fatal(err)
			}
			wantN := 1
			if u == "@sender:localhost" || u == "@ghost:localhost" {
				wantN = 0
			}
			if len(notes) != wantN {
				t.Fatalf("%s has %d notifications, want %d", u, len(notes), wantN)
			}
			if wantN == 1 && (notes[0].EventID != e.EventID || notes[0].Highlight != (u == "@user2:localhost") || notes[0].ThreadID != "main") {
				t.Fatalf("%s: %+v", u, notes[0])
			}
		}
		if pos, _ := db.PushWorkerPos(ctx); pos != e.StreamPos {
			t.Fatalf("worker position %d, want %d", pos, e.StreamPos)
		}
		// Another owner cannot commit.
		s.owner = "someone else"
		sendMessage(t, db, roomID, map[string]any{"msgtype": "m.text", "body": "again"})
		if _, err := s.evaluate(ctx); err != errLeaseLost {
			t.Fatalf("evaluate without the lease: %v", err)
		}
	})
}

// BenchmarkPushWorker1000Members is the push worker's whole cost per event
// in a 1,000-member room: reading the event, evaluating every member's
// rules, and storing the ~1,000 notifications with the worker's position
// in one transaction.
func BenchmarkPushWorker1000Members(b *testing.B) {
	for _, dialect := range []string{testdb.SQLite, testdb.Postgres} {
		b.Run(dialect, func(b *testing.B) {
			s, db, roomID := workerRoom(b, testdb.URI(b, dialect), 1000)
			ctx := context.Background()
			// Warm the caches (room info, rules, pushable users).
			sendMessage(b, db, roomID, map[string]any{"msgtype": "m.text", "body": "warm up"})
			if _, err := s.evaluate(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				sendMessage(b, db, roomID, map[string]any{"msgtype": "m.text", "body": "Has anyone seen the deploy logs?"})
				b.StartTimer()
				if caughtUp, err := s.evaluate(ctx); err != nil || !caughtUp {
					b.Fatalf("evaluate: %v %v", caughtUp, err)
				}
			}
		})
	}
}
