package notifier

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestNotifierPeerPayloadsStayUnderLimit(t *testing.T) {
	var b wakeBatch
	var users []id.UserID
	for i := range 2000 {
		// Long IDs with characters JSON escapes, to exercise the sizing.
		users = append(users, id.UserID(fmt.Sprintf("@user<%d>%s:example.org", i, strings.Repeat("x", 60))))
	}
	b.add(42, users, false)
	payloads := b.payloads("origin")
	if len(payloads) < 2 {
		t.Fatalf("%d users fit in %d payload(s)?", len(users), len(payloads))
	}
	seen := map[id.UserID]int{}
	for _, p := range payloads {
		if len(p) >= 8000 {
			t.Fatalf("payload of %d bytes; PostgreSQL refuses 8000 and more", len(p))
		}
		var msg peerMessage
		if err := json.Unmarshal([]byte(p), &msg); err != nil {
			t.Fatal(err)
		}
		if msg.Origin != "origin" || msg.Pos != 42 || msg.All {
			t.Fatalf("bad envelope %+v", msg)
		}
		for _, u := range msg.Users {
			seen[u]++
		}
	}
	for _, u := range users {
		if seen[u] != 1 {
			t.Fatalf("%s in %d payloads, want 1", u, seen[u])
		}
	}
}

func TestNotifierPeerBatchOverflowWakesEveryone(t *testing.T) {
	var b wakeBatch
	for i := range maxPendingUsers + 1 {
		b.add(int64(i), []id.UserID{id.UserID(fmt.Sprintf("@u%d:example.org", i))}, false)
	}
	b.add(1, []id.UserID{alice}, false) // stays "everyone"
	payloads := b.payloads("o")
	if len(payloads) != 1 {
		t.Fatalf("%d payloads for an overflowing batch, want 1", len(payloads))
	}
	var msg peerMessage
	if err := json.Unmarshal([]byte(payloads[0]), &msg); err != nil {
		t.Fatal(err)
	}
	if !msg.All || msg.Pos != maxPendingUsers || len(msg.Users) != 0 {
		t.Fatalf("overflow payload %s", payloads[0])
	}
}

// connectPair returns two notifiers that, like two homeserver processes,
// share one PostgreSQL database.
func connectPair(t *testing.T) (uri string, a, b *Notifier) {
	t.Helper()
	uri = testdb.PostgresURI(t)
	a, b = New(nil), New(nil)
	for _, n := range []*Notifier{a, b} {
		if err := n.ConnectPostgres(context.Background(), uri, zerolog.New(zerolog.NewTestWriter(t))); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := n.Close(); err != nil {
				t.Errorf("close notifier: %v", err)
			}
		})
	}
	return uri, a, b
}

func TestNotifierPeerWakeCrossesProcesses(t *testing.T) {
	_, a, b := connectPair(t)
	// Only the writing side knows the room's members: the wake must carry
	// users, not leave the receiver to resolve the room.
	a.SetRoomUsers(func(r id.RoomID) []id.UserID {
		if r == room {
			return []id.UserID{alice, bob}
		}
		return nil
	})

	lb, lc := b.Listen(bob), b.Listen(carol)
	defer lb.Close()
	defer lc.Close()
	start := time.Now()
	a.Wake(12, nil, []id.RoomID{room})
	if !woken(lb, 2*time.Second) {
		t.Fatal("bob's sync in process B was not woken by a room event written in process A")
	}
	t.Logf("A → B wake latency: %v", time.Since(start))
	if woken(lc, 100*time.Millisecond) {
		t.Fatal("carol, not in the room, was woken in process B")
	}
	if got := b.Pos(); got != 12 {
		t.Fatalf("B's Pos() = %d after A's wake at 12", got)
	}

	// And back: a user wake in B reaches A.
	la := a.Listen(alice)
	defer la.Close()
	start = time.Now()
	b.Wake(13, []id.UserID{alice}, nil)
	if !woken(la, 2*time.Second) {
		t.Fatal("alice's sync in process A was not woken by process B")
	}
	t.Logf("B → A wake latency: %v", time.Since(start))

	// Data outside the stream (typing) stays in its process.
	la2 := a.Listen(alice)
	defer la2.Close()
	b.Wake(0, []id.UserID{alice}, nil)
	if woken(la2, 200*time.Millisecond) {
		t.Fatal("a pos-0 wake crossed processes")
	}
}

func TestNotifierPeerWakeManyUsers(t *testing.T) {
	_, a, b := connectPair(t)
	var users []id.UserID
	for i := range 1500 {
		users = append(users, id.UserID(fmt.Sprintf("@member%04d:example.org", i)))
	}
	first, last := b.Listen(users[0]), b.Listen(users[len(users)-1])
	defer first.Close()
	defer last.Close()
	a.Wake(5, users, nil)
	if !woken(first, 2*time.Second) || !woken(last, 2*time.Second) {
		t.Fatal("a wake split over several notifications did not reach every user")
	}
}

func TestNotifierPeerIgnoresOwnNotifications(t *testing.T) {
	_, a, _ := connectPair(t)
	l := a.Listen(alice)
	defer l.Close()
	a.mu.Lock()
	bridge := a.peers
	a.mu.Unlock()
	bridge.deliver(fmt.Sprintf(`{"o":%q,"p":1,"u":[%q]}`, bridge.origin, alice))
	if woken(l, 20*time.Millisecond) {
		t.Fatal("a process acted on its own notification")
	}
	bridge.deliver(`{"o":"someone-else","p":1,"u":["` + string(alice) + `"]}`)
	if !woken(l, time.Second) {
		t.Fatal("a process ignored another process's notification")
	}
	bridge.deliver(`not json`) // logged, ignored
}

// When the listening connection drops, notifications sent meanwhile are
// lost, so the reconnected process wakes every sync to recheck.
func TestNotifierPeerReconnectWakesEveryone(t *testing.T) {
	uri, a, b := connectPair(t)
	db, err := sql.Open("postgres", uri)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := b.Listen(carol)
	defer l.Close()
	var killed int
	err = db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'listen%'`).Scan(&killed)
	if err != nil {
		t.Fatal(err)
	}
	if killed != 2 {
		t.Fatalf("terminated %d listening connections, want 2", killed)
	}
	if !woken(l, 10*time.Second) {
		t.Fatal("syncs were not woken after the listener reconnected")
	}
	// The exchange works again after the reconnect.
	l2 := b.Listen(bob)
	defer l2.Close()
	a.Wake(20, []id.UserID{bob}, nil)
	if !woken(l2, 5*time.Second) {
		t.Fatal("no cross-process wake after reconnecting")
	}
}

func TestNotifierPeerCloseIsIdempotentAndStopsPublishing(t *testing.T) {
	_, a, _ := connectPair(t)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a.Wake(3, []id.UserID{alice}, nil) // local only now; must not panic or block
	if err := New(nil).Close(); err != nil {
		t.Fatal(err)
	}
}
