package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// rcptEvents stores a room with n message events and returns their IDs
// and stream positions, oldest first.
func rcptEvents(t *testing.T, db *storage.DB, roomID id.RoomID, n int) ([]id.EventID, []int64) {
	t.Helper()
	if err := db.InsertRoom(ctx, &storage.Room{RoomID: roomID, Version: "12", Creator: "@alice:x"}); err != nil {
		t.Fatal(err)
	}
	var ids []id.EventID
	var positions []int64
	for i := range n {
		eventID := id.EventID(fmt.Sprintf("$%s-%d", strings.Trim(string(roomID), "!:x"), i))
		err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
			pos, err := db.AllocStreamPos(ctx, 1)
			if err != nil {
				return err
			}
			positions = append(positions, pos)
			return db.InsertEvent(ctx, &storage.Event{StreamPos: pos, EventID: eventID, RoomID: roomID,
				Type: "m.room.message", Sender: "@alice:x", Depth: int64(i + 1), PDU: []byte(`{"content":{}}`)})
		})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, eventID)
	}
	return ids, positions
}

// rcptKeys renders receipts as "room type user thread event" lines.
func rcptKeys(rs []storage.Receipt) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s %s %s %q %s", r.RoomID, r.Type, r.UserID, r.ThreadID, r.EventID))
	}
	return out
}

func TestReceiptsForwardOnlyAndSince(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		const room1, room2 = id.RoomID("!one:x"), id.RoomID("!two:x")
		const alice, bob = id.UserID("@alice:x"), id.UserID("@bob:x")
		ev, pos := rcptEvents(t, db, room1, 3)
		ev2, pos2 := rcptEvents(t, db, room2, 1)
		start := currentPos(t, db)

		p1 := mustPos(t)(db.SetReceipt(ctx, room1, event.ReceiptTypeRead, bob, "", ev[1], pos[1]))
		// Same event again, or an older one: nothing changes.
		for _, i := range []int{1, 0} {
			if p, err := db.SetReceipt(ctx, room1, event.ReceiptTypeRead, bob, "", ev[i], pos[i]); err != nil || p != 0 {
				t.Fatalf("receipt on event %d after event 1: pos %d, %v; want no write", i, p, err)
			}
		}
		// Threads and private receipts are separate receipts.
		mustPos(t)(db.SetReceipt(ctx, room1, event.ReceiptTypeRead, bob, "main", ev[0], pos[0]))
		mustPos(t)(db.SetReceipt(ctx, room1, event.ReceiptTypeReadPrivate, bob, "", ev[2], pos[2]))
		mustPos(t)(db.SetReceipt(ctx, room2, event.ReceiptTypeRead, alice, "", ev2[0], pos2[0]))
		mid := currentPos(t, db)
		p5 := mustPos(t)(db.SetReceipt(ctx, room1, event.ReceiptTypeRead, bob, "", ev[2], pos[2]))
		if p5 <= p1 {
			t.Fatalf("receipt positions %d then %d", p1, p5)
		}
		end := currentPos(t, db)

		got, err := db.ReceiptsSince(ctx, []id.RoomID{room1, room2}, alice, start, end)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			`!one:x m.read @bob:x "main" ` + string(ev[0]),
			`!one:x m.read @bob:x "" ` + string(ev[2]),
			`!two:x m.read @alice:x "" ` + string(ev2[0]),
		}
		if !slices.Equal(rcptKeys(got), want) {
			t.Errorf("alice sees %q, want %q (bob's private receipt hidden)", rcptKeys(got), want)
		}
		got, err = db.ReceiptsSince(ctx, []id.RoomID{room1}, bob, start, mid)
		if err != nil {
			t.Fatal(err)
		}
		want = []string{
			`!one:x m.read @bob:x "main" ` + string(ev[0]),
			`!one:x m.read.private @bob:x "" ` + string(ev[2]),
		}
		// The unthreaded m.read was rewritten after mid: not in the window.
		if !slices.Equal(rcptKeys(got), want) {
			t.Errorf("bob sees %q up to mid, want %q", rcptKeys(got), want)
		}
		if got, err := db.ReceiptsSince(ctx, []id.RoomID{room2}, bob, mid, end); err != nil || len(got) != 0 {
			t.Errorf("room2 after mid: %q, %v", rcptKeys(got), err)
		}
		for _, r := range got {
			if r.TS <= 0 || r.StreamPos <= start {
				t.Errorf("receipt %+v lacks ts or position", r)
			}
		}

		// The read position per thread is whichever of m.read and
		// m.read.private is further.
		read, err := db.ReadUpTo(ctx, room1, bob)
		if err != nil {
			t.Fatal(err)
		}
		if read[""] != pos[2] || read["main"] != pos[0] || len(read) != 2 {
			t.Errorf("bob's read positions = %v, want unthreaded %d and main %d", read, pos[2], pos[0])
		}
		if read, err := db.ReadUpTo(ctx, room1, alice); err != nil || len(read) != 0 {
			t.Errorf("alice's read positions = %v, %v; want none", read, err)
		}
	})
}

func TestFullyReadMarker(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		const roomID, bob = id.RoomID("!one:x"), id.UserID("@bob:x")
		ev, pos := rcptEvents(t, db, roomID, 3)
		marker := func() id.EventID {
			t.Helper()
			raw, err := db.GetAccountData(ctx, bob, roomID, storage.FullyReadType)
			if err != nil {
				t.Fatal(err)
			}
			var c struct {
				EventID id.EventID `json:"event_id"`
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			return c.EventID
		}
		mustPos(t)(db.SetFullyRead(ctx, bob, roomID, ev[1], pos[1]))
		if m := marker(); m != ev[1] {
			t.Fatalf("marker = %s, want %s", m, ev[1])
		}
		for _, i := range []int{1, 0} {
			if p, err := db.SetFullyRead(ctx, bob, roomID, ev[i], pos[i]); err != nil || p != 0 {
				t.Fatalf("marker to event %d after event 1: pos %d, %v; want no write", i, p, err)
			}
		}
		p := mustPos(t)(db.SetFullyRead(ctx, bob, roomID, ev[2], pos[2]))
		if m := marker(); m != ev[2] {
			t.Fatalf("marker = %s, want %s", m, ev[2])
		}
		_, rooms, err := db.AccountDataSince(ctx, bob, p-1, p)
		if err != nil || len(rooms[roomID]) != 1 || rooms[roomID][0].Type != storage.FullyReadType {
			t.Fatalf("marker not in the account data stream: %+v, %v", rooms, err)
		}
	})
}
