package storage_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// mustPos returns a checker for the (stream position, error) of a write.
func mustPos(t *testing.T) func(pos int64, err error) int64 {
	return func(pos int64, err error) int64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if pos <= 0 {
			t.Fatalf("stream position %d, want > 0", pos)
		}
		return pos
	}
}

func currentPos(t *testing.T, db *storage.DB) int64 {
	t.Helper()
	pos, err := db.CurrentStreamPos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func adTypes(evts []storage.AccountDataEvent) string {
	var parts []string
	for _, e := range evts {
		parts = append(parts, e.Type+"="+string(e.Content))
	}
	return strings.Join(parts, " ")
}

func TestAccountDataSince(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		const alice, bob = id.UserID("@alice:x"), id.UserID("@bob:x")
		const room1, room2 = id.RoomID("!one:x"), id.RoomID("!two:x")

		if _, err := db.GetAccountData(ctx, alice, "", "m.direct"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unset account data: %v", err)
		}
		p1 := mustPos(t)(db.SetAccountData(ctx, alice, "", "m.direct", json.RawMessage(`{"a":1}`)))
		p2 := mustPos(t)(db.SetAccountData(ctx, alice, room1, "com.example.r", json.RawMessage(`{"r":1}`)))
		p3 := mustPos(t)(db.SetAccountData(ctx, alice, "", "com.example.g", json.RawMessage(`{"g":1}`)))
		mustPos(t)(db.SetAccountData(ctx, bob, "", "m.direct", json.RawMessage(`{"bob":1}`)))
		p5 := mustPos(t)(db.SetAccountData(ctx, alice, room2, "com.example.r", json.RawMessage(`{"r":2}`)))
		if !(p1 < p2 && p2 < p3 && p3 < p5) {
			t.Fatalf("positions not increasing: %d %d %d %d", p1, p2, p3, p5)
		}
		// Global and per-room data of one type are separate.
		if c, err := db.GetAccountData(ctx, alice, room1, "m.direct"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("room m.direct = %s, %v; global data must not leak into rooms", c, err)
		}
		if c, err := db.GetAccountData(ctx, alice, room1, "com.example.r"); err != nil || string(c) != `{"r":1}` {
			t.Fatalf("room data = %s, %v", c, err)
		}

		upto := currentPos(t, db)
		global, rooms, err := db.AccountDataSince(ctx, alice, 0, upto)
		if err != nil {
			t.Fatal(err)
		}
		if got := adTypes(global); got != `m.direct={"a":1} com.example.g={"g":1}` {
			t.Errorf("initial global = %s", got)
		}
		if len(rooms) != 2 || adTypes(rooms[room1]) != `com.example.r={"r":1}` || adTypes(rooms[room2]) != `com.example.r={"r":2}` {
			t.Errorf("initial rooms = %v", rooms)
		}
		if global[0].StreamPos != p1 || rooms[room2][0].StreamPos != p5 {
			t.Errorf("stream positions = %d, %d; want %d, %d", global[0].StreamPos, rooms[room2][0].StreamPos, p1, p5)
		}

		// Incremental: only what changed after since, up to upto.
		global, rooms, err = db.AccountDataSince(ctx, alice, p2, p3)
		if err != nil || adTypes(global) != `com.example.g={"g":1}` || len(rooms) != 0 {
			t.Fatalf("(p2, p3] = %v %v %v", global, rooms, err)
		}
		// Overwriting moves the type to its new position; it appears once.
		p6 := mustPos(t)(db.SetAccountData(ctx, alice, "", "m.direct", json.RawMessage(`{"a":2}`)))
		global, _, err = db.AccountDataSince(ctx, alice, upto, p6)
		if err != nil || adTypes(global) != `m.direct={"a":2}` || global[0].StreamPos != p6 {
			t.Fatalf("after overwrite = %v, %v", global, err)
		}
		global, _, _ = db.AccountDataSince(ctx, alice, 0, p6)
		if adTypes(global) != `com.example.g={"g":1} m.direct={"a":2}` {
			t.Fatalf("initial after overwrite = %s", adTypes(global))
		}
		// Nothing new: empty.
		if global, rooms, err := db.AccountDataSince(ctx, alice, p6, p6); err != nil || len(global) != 0 || len(rooms) != 0 {
			t.Fatalf("empty range = %v %v %v", global, rooms, err)
		}

		// Limits, and updates that change nothing write nothing.
		big := json.RawMessage(`{"x":"` + strings.Repeat("a", storage.MaxAccountDataBytes) + `"}`)
		if _, err := db.SetAccountData(ctx, alice, "", "big", big); !errors.Is(err, storage.ErrAccountDataTooLarge) {
			t.Fatalf("oversize account data: %v", err)
		}
		before := currentPos(t, db)
		pos, err := db.UpdateAccountData(ctx, alice, "", "m.direct", func(old json.RawMessage) (json.RawMessage, bool, error) {
			if string(old) != `{"a":2}` {
				t.Errorf("update saw %s", old)
			}
			return nil, false, nil
		})
		if err != nil || pos != 0 || currentPos(t, db) != before {
			t.Fatalf("no-op update: pos %d, err %v, stream %d -> %d", pos, err, before, currentPos(t, db))
		}
		if _, err := db.GetAccountData(ctx, alice, "", "big"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("refused write was stored: %v", err)
		}
	})
}

// Read-modify-write updates (tags) racing on one account data type must
// not lose each other's changes.
func TestAccountDataConcurrentUpdates(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		const n = 16
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := db.UpdateAccountData(ctx, "@a:x", "!r:x", "m.tag", func(old json.RawMessage) (json.RawMessage, bool, error) {
					m := map[string]int{}
					if old != nil {
						if err := json.Unmarshal(old, &m); err != nil {
							return nil, false, err
						}
					}
					m[fmt.Sprint(i)] = i
					out, err := json.Marshal(m)
					return out, true, err
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		c, err := db.GetAccountData(ctx, "@a:x", "!r:x", "m.tag")
		var m map[string]int
		if err != nil || json.Unmarshal(c, &m) != nil || len(m) != n {
			t.Fatalf("after %d concurrent updates: %s, %v", n, c, err)
		}
	})
}

func TestFilters(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		f1 := json.RawMessage(`{"room":{"timeline":{"limit":5}}}`)
		id1, err := db.CreateFilter(ctx, "@a:x", f1)
		if err != nil || id1 == "" || strings.HasPrefix(id1, "{") {
			t.Fatalf("create filter = %q, %v", id1, err)
		}
		if got, err := db.GetFilter(ctx, "@a:x", id1); err != nil || string(got) != string(f1) {
			t.Fatalf("get filter = %s, %v", got, err)
		}
		// The same filter again gets the same ID; another gets a new one.
		if again, err := db.CreateFilter(ctx, "@a:x", f1); err != nil || again != id1 {
			t.Fatalf("same filter = %q, %v; want %q", again, err, id1)
		}
		id2, err := db.CreateFilter(ctx, "@a:x", json.RawMessage(`{}`))
		if err != nil || id2 == id1 {
			t.Fatalf("second filter = %q, %v", id2, err)
		}
		// Filters are per user.
		if _, err := db.GetFilter(ctx, "@b:x", id1); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("other user's filter: %v", err)
		}
		if _, err := db.GetFilter(ctx, "@a:x", "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown filter: %v", err)
		}
	})
}

// toDeviceSetup makes @a:x with devices A1, A2, A3 and @b:x with B1.
func toDeviceSetup(t *testing.T, db *storage.DB) {
	t.Helper()
	for user, devices := range map[id.UserID][]id.DeviceID{"@a:x": {"A1", "A2", "A3"}, "@b:x": {"B1"}} {
		if err := db.CreateUser(ctx, &storage.User{UserID: user}); err != nil {
			t.Fatal(err)
		}
		for _, d := range devices {
			if err := db.EnsureDevice(ctx, user, d, nil, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func tdContents(msgs []storage.ToDeviceMessage) string {
	var parts []string
	for _, m := range msgs {
		parts = append(parts, string(m.Content))
	}
	return strings.Join(parts, " ")
}

func TestToDevice(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		toDeviceSetup(t, db)
		send := func(txn, evType string, msgs map[id.UserID]map[id.DeviceID]json.RawMessage) *storage.ToDeviceResult {
			t.Helper()
			res, err := db.SendToDevice(ctx, &storage.ToDeviceRequest{
				Sender: "@b:x", SenderDevice: "B1", TxnID: txn, Type: evType, Messages: msgs, Response: json.RawMessage(`{}`),
			})
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		start := currentPos(t, db)
		res := send("t1", "m.test", map[id.UserID]map[id.DeviceID]json.RawMessage{
			// "*" reaches every device, but A2's own entry wins for A2.
			"@a:x":       {"*": json.RawMessage(`{"n":"all"}`), "A2": json.RawMessage(`{"n":"a2"}`)},
			"@b:x":       {"B1": json.RawMessage(`{"n":"b1"}`), "GONE": json.RawMessage(`{"n":"gone"}`)},
			"@nobody:x":  {"*": json.RawMessage(`{"n":"nobody"}`)},
			"@nodevs:xy": {"X": json.RawMessage(`{}`)},
		})
		if res.Duplicate || res.StreamPos != start+4 || fmt.Sprint(res.Recipients) != "[@a:x @b:x]" {
			t.Fatalf("send = %+v (start %d)", res, start)
		}
		end := currentPos(t, db)
		if end != res.StreamPos {
			t.Fatalf("stream at %d, last message at %d", end, res.StreamPos)
		}

		for _, c := range []struct {
			dev  id.DeviceID
			want string
		}{{"A1", `{"n":"all"}`}, {"A2", `{"n":"a2"}`}, {"A3", `{"n":"all"}`}} {
			msgs, err := db.ToDeviceSince(ctx, "@a:x", c.dev, 0, end, 100)
			if err != nil || len(msgs) != 1 || string(msgs[0].Content) != c.want ||
				msgs[0].Sender != "@b:x" || msgs[0].Type != "m.test" || msgs[0].StreamPos <= start {
				t.Fatalf("%s got %+v, %v", c.dev, msgs, err)
			}
		}
		if msgs, _ := db.ToDeviceSince(ctx, "@b:x", "GONE", 0, end, 0); len(msgs) != 0 {
			t.Fatalf("message stored for an unknown device: %+v", msgs)
		}

		// A retransmission stores nothing and answers as the first time.
		res = send("t1", "m.test", map[id.UserID]map[id.DeviceID]json.RawMessage{"@a:x": {"*": json.RawMessage(`{"n":"again"}`)}})
		if !res.Duplicate || string(res.Response) != `{}` || res.StreamPos != 0 || currentPos(t, db) != end {
			t.Fatalf("retransmission = %+v", res)
		}
		// The same transaction ID from another device is a new request.
		res2, err := db.SendToDevice(ctx, &storage.ToDeviceRequest{
			Sender: "@a:x", SenderDevice: "A1", TxnID: "t1", Type: "m.test",
			Messages: map[id.UserID]map[id.DeviceID]json.RawMessage{"@a:x": {"A1": json.RawMessage(`{"n":2}`)}}, Response: json.RawMessage(`{}`),
		})
		if err != nil || res2.Duplicate {
			t.Fatalf("same txn from another device = %+v, %v", res2, err)
		}
		for i := 3; i <= 5; i++ {
			send(fmt.Sprint("t", i), "m.test", map[id.UserID]map[id.DeviceID]json.RawMessage{"@a:x": {"A1": json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}})
		}
		end = currentPos(t, db)

		// In order, limited, bounded by since and upto.
		msgs, err := db.ToDeviceSince(ctx, "@a:x", "A1", 0, end, 0)
		if err != nil || tdContents(msgs) != `{"n":"all"} {"n":2} {"n":3} {"n":4} {"n":5}` {
			t.Fatalf("A1 all = %s, %v", tdContents(msgs), err)
		}
		if page, _ := db.ToDeviceSince(ctx, "@a:x", "A1", 0, end, 2); tdContents(page) != `{"n":"all"} {"n":2}` {
			t.Fatalf("A1 limit 2 = %s", tdContents(page))
		}
		if page, _ := db.ToDeviceSince(ctx, "@a:x", "A1", msgs[1].StreamPos, msgs[3].StreamPos, 0); tdContents(page) != `{"n":3} {"n":4}` {
			t.Fatalf("A1 (2nd, 4th] = %s", tdContents(page))
		}

		// Acknowledged messages are deleted, only for that device.
		if err := db.DeleteToDeviceUpTo(ctx, "@a:x", "A1", msgs[2].StreamPos); err != nil {
			t.Fatal(err)
		}
		if left, _ := db.ToDeviceSince(ctx, "@a:x", "A1", 0, end, 0); tdContents(left) != `{"n":4} {"n":5}` {
			t.Fatalf("A1 after ack = %s", tdContents(left))
		}
		if left, _ := db.ToDeviceSince(ctx, "@a:x", "A2", 0, end, 0); len(left) != 1 {
			t.Fatalf("A2 lost messages to A1's ack: %+v", left)
		}

		// Deleting devices deletes their queues.
		if err := db.DeleteToDeviceForDevice(ctx, "@a:x", "A1"); err != nil {
			t.Fatal(err)
		}
		if left, _ := db.ToDeviceSince(ctx, "@a:x", "A1", 0, end, 0); len(left) != 0 {
			t.Fatalf("A1 after device deletion = %s", tdContents(left))
		}
		if err := db.DeleteToDeviceForOtherDevices(ctx, "@a:x", "A2"); err != nil {
			t.Fatal(err)
		}
		a2, _ := db.ToDeviceSince(ctx, "@a:x", "A2", 0, end, 0)
		a3, _ := db.ToDeviceSince(ctx, "@a:x", "A3", 0, end, 0)
		if len(a2) != 1 || len(a3) != 0 {
			t.Fatalf("after deleting devices other than A2: A2 %d, A3 %d messages", len(a2), len(a3))
		}
		if err := db.DeleteToDeviceForOtherDevices(ctx, "@a:x", ""); err != nil {
			t.Fatal(err)
		}
		if a2, _ := db.ToDeviceSince(ctx, "@a:x", "A2", 0, end, 0); len(a2) != 0 {
			t.Fatalf("A2 after deleting all devices: %d", len(a2))
		}
		if b1, _ := db.ToDeviceSince(ctx, "@b:x", "B1", 0, end, 0); tdContents(b1) != `{"n":"b1"}` {
			t.Fatalf("B1 = %s", tdContents(b1))
		}
	})
}

// Many recipient devices go in batches; retransmissions racing the first
// request are still stored once.
func TestToDeviceFanOutAndRacingRetransmissions(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		if err := db.CreateUser(ctx, &storage.User{UserID: "@a:x"}); err != nil {
			t.Fatal(err)
		}
		const devices = 250
		for i := range devices {
			if err := db.EnsureDevice(ctx, "@a:x", id.DeviceID(fmt.Sprintf("D%03d", i)), nil, ""); err != nil {
				t.Fatal(err)
			}
		}
		req := &storage.ToDeviceRequest{
			Sender: "@a:x", SenderDevice: "D000", TxnID: "race", Type: "m.room_key",
			Messages: map[id.UserID]map[id.DeviceID]json.RawMessage{"@a:x": {"*": json.RawMessage(`{"k":1}`)}},
			Response: json.RawMessage(`{}`),
		}
		start := currentPos(t, db)
		var wg sync.WaitGroup
		var mu sync.Mutex
		firsts := 0
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := db.SendToDevice(ctx, req)
				if err != nil {
					t.Error(err)
					return
				}
				if !res.Duplicate {
					mu.Lock()
					firsts++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		end := currentPos(t, db)
		if firsts != 1 || end != start+devices {
			t.Fatalf("%d requests stored, stream moved %d (want 1, %d)", firsts, end-start, devices)
		}
		for _, d := range []id.DeviceID{"D000", "D123", "D249"} {
			if msgs, err := db.ToDeviceSince(ctx, "@a:x", d, 0, end, 0); err != nil || len(msgs) != 1 {
				t.Fatalf("%s = %+v, %v", d, msgs, err)
			}
		}
	})
}

func TestPresenceSince(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		if _, err := db.GetPresence(ctx, "@a:x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unset presence: %v", err)
		}
		msg := "in a meeting"
		p1 := mustPos(t)(db.SetPresence(ctx, "@a:x", event.PresenceOnline, &msg))
		p2 := mustPos(t)(db.SetPresence(ctx, "@b:x", event.PresenceUnavailable, nil))
		p3 := mustPos(t)(db.SetPresence(ctx, "@c:x", event.PresenceOnline, nil))
		p4 := mustPos(t)(db.SetPresence(ctx, "@a:x", event.PresenceOffline, nil))

		a, err := db.GetPresence(ctx, "@a:x")
		if err != nil || a.Presence != event.PresenceOffline || a.StatusMsg != nil || a.CurrentlyActive || a.StreamPos != p4 || a.LastActiveTS == 0 {
			t.Fatalf("a = %+v, %v", a, err)
		}

		// Many user IDs (batched queries), duplicates and unknown users.
		users := []id.UserID{"@c:x", "@a:x", "@b:x", "@a:x"}
		for i := range 1200 {
			users = append(users, id.UserID(fmt.Sprintf("@u%d:x", i)))
		}
		got, err := db.PresenceSince(ctx, users, 0, p4)
		if err != nil {
			t.Fatal(err)
		}
		var seen []string
		for _, p := range got {
			seen = append(seen, fmt.Sprintf("%s:%s@%d", p.UserID, p.Presence, p.StreamPos))
		}
		want := fmt.Sprintf("[@b:x:unavailable@%d @c:x:online@%d @a:x:offline@%d]", p2, p3, p4)
		if fmt.Sprint(seen) != want {
			t.Fatalf("presence since 0 = %v, want %s", seen, want)
		}
		if got[1].CurrentlyActive != true {
			t.Errorf("online presence not currently active: %+v", got[1])
		}
		// Bounded by (since, upto] and by the users asked about.
		got, err = db.PresenceSince(ctx, []id.UserID{"@a:x", "@b:x"}, p1, p3)
		if err != nil || len(got) != 1 || got[0].UserID != "@b:x" {
			t.Fatalf("presence (p1, p3] of a, b = %+v, %v", got, err)
		}
		if got, err := db.PresenceSince(ctx, nil, 0, p4); err != nil || len(got) != 0 {
			t.Fatalf("presence of nobody = %+v, %v", got, err)
		}

		// As clients see it.
		if c := a.Content(a.LastActiveTS + 1500); c.Presence != event.PresenceOffline || c.LastActiveAgo == nil || *c.LastActiveAgo != 1500 ||
			c.CurrentlyActive != nil || c.StatusMsg != nil {
			t.Errorf("offline content = %+v", c)
		}
		if c, err := db.GetPresence(ctx, "@c:x"); err != nil {
			t.Fatal(err)
		} else if c := c.Content(0); *c.LastActiveAgo != 0 || c.CurrentlyActive == nil || !*c.CurrentlyActive {
			t.Errorf("online content (clock behind) = %+v", c)
		}

		// The status message is kept when set.
		mustPos(t)(db.SetPresence(ctx, "@b:x", event.PresenceOnline, &msg))
		if b, _ := db.GetPresence(ctx, "@b:x"); b.StatusMsg == nil || *b.StatusMsg != msg || !b.CurrentlyActive {
			t.Fatalf("b = %+v", b)
		}
	})
}
