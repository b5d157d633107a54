package notifier

import (
	"context"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

const (
	alice = id.UserID("@alice:example.org")
	bob   = id.UserID("@bob:example.org")
	carol = id.UserID("@carol:example.org")
	room  = id.RoomID("!room:example.org")
)

// woken reports whether l is woken within d.
func woken(l *Listener, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Wait(ctx)
}

func TestNotifierWakesListenedUser(t *testing.T) {
	n := New(nil)
	l := n.Listen(alice)
	defer l.Close()
	go func() {
		time.Sleep(20 * time.Millisecond)
		n.Wake(7, []id.UserID{alice}, nil)
	}()
	if !woken(l, 5*time.Second) {
		t.Fatal("alice's listener was not woken by a wake naming her")
	}
	if got := n.Pos(); got != 7 {
		t.Fatalf("Pos() = %d after waking at 7", got)
	}
}

// A write that commits between Listen and Wait (while the sync reads the
// database) must still wake the sync.
func TestNotifierKeepsWakeBetweenListenAndWait(t *testing.T) {
	n := New(nil)
	l := n.Listen(alice)
	defer l.Close()
	n.Wake(3, []id.UserID{alice}, nil)
	if !woken(l, 100*time.Millisecond) {
		t.Fatal("a wake between Listen and Wait was lost")
	}
	// And a listener registered after the wake does not see it.
	l2 := n.Listen(alice)
	defer l2.Close()
	if woken(l2, 50*time.Millisecond) {
		t.Fatal("a listener registered after the wake was woken by it")
	}
}

func TestNotifierWakesOnlyNamedUsers(t *testing.T) {
	n := New(nil)
	la, lb := n.Listen(alice), n.Listen(bob)
	defer la.Close()
	defer lb.Close()
	n.Wake(1, []id.UserID{bob}, nil)
	if !woken(lb, time.Second) {
		t.Fatal("bob was not woken")
	}
	if woken(la, 50*time.Millisecond) {
		t.Fatal("alice was woken by a wake naming only bob")
	}
}

func TestNotifierWakesEveryListenerOfUser(t *testing.T) {
	n := New(nil)
	// Two devices of one user long-polling at once.
	l1, l2 := n.Listen(alice), n.Listen(alice)
	defer l1.Close()
	defer l2.Close()
	n.Wake(1, []id.UserID{alice}, nil)
	if !woken(l1, time.Second) || !woken(l2, time.Second) {
		t.Fatal("not every listener of alice was woken")
	}
}

func TestNotifierResolvesRooms(t *testing.T) {
	var mu sync.Mutex
	members := map[id.RoomID][]id.UserID{room: {alice, bob}}
	n := New(nil)
	n.SetRoomUsers(func(r id.RoomID) []id.UserID {
		mu.Lock()
		defer mu.Unlock()
		return members[r]
	})
	la, lb, lc := n.Listen(alice), n.Listen(bob), n.Listen(carol)
	defer la.Close()
	defer lb.Close()
	defer lc.Close()
	n.Wake(10, nil, []id.RoomID{room})
	if !woken(la, time.Second) || !woken(lb, time.Second) {
		t.Fatal("room members were not woken by a room-wide wake")
	}
	if woken(lc, 50*time.Millisecond) {
		t.Fatal("carol, not in the room, was woken by its event")
	}
	// The resolver is asked at wake time: a member who joined since is
	// woken by the room's next event.
	mu.Lock()
	members[room] = append(members[room], carol)
	mu.Unlock()
	n.Wake(11, nil, []id.RoomID{room, "!other:example.org"})
	if !woken(lc, time.Second) {
		t.Fatal("carol was not woken after joining the room")
	}
}

func TestNotifierWithoutResolverIgnoresRooms(t *testing.T) {
	n := New(nil)
	l := n.Listen(alice)
	defer l.Close()
	n.Wake(1, nil, []id.RoomID{room})
	if woken(l, 50*time.Millisecond) {
		t.Fatal("woken by a room wake with no resolver")
	}
	n.Wake(2, []id.UserID{alice}, []id.RoomID{room})
	if !woken(l, time.Second) {
		t.Fatal("named user not woken when the wake also names rooms")
	}
}

func TestNotifierPosOnlyRises(t *testing.T) {
	n := New(nil)
	n.Wake(5, nil, nil)
	n.Wake(3, nil, nil)
	n.Wake(0, []id.UserID{alice}, nil) // typing: outside the stream
	if got := n.Pos(); got != 5 {
		t.Fatalf("Pos() = %d, want 5", got)
	}
}

func TestNotifierListenerCloseUnregisters(t *testing.T) {
	n := New(nil)
	l := n.Listen(alice)
	l.Close()
	l.Close() // idempotent
	n.mu.Lock()
	left := len(n.waiters)
	n.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d users still registered after Close", left)
	}
	n.Wake(1, []id.UserID{alice}, nil) // no panic on a closed listener's user
	if woken(l, 20*time.Millisecond) {
		t.Fatal("a closed listener was woken")
	}
	// Closing after a wake (the usual order in /sync) is fine too.
	l = n.Listen(alice)
	n.Wake(2, []id.UserID{alice}, nil)
	l.Close()
	if !woken(l, time.Second) {
		t.Fatal("a woken listener lost its wake when closed")
	}
}

func TestNotifierListenerWaitEndsWithContext(t *testing.T) {
	n := New(nil)
	l := n.Listen(alice)
	defer l.Close()
	start := time.Now()
	if woken(l, 30*time.Millisecond) {
		t.Fatal("woken without a wake")
	}
	if d := time.Since(start); d < 30*time.Millisecond || d > 2*time.Second {
		t.Fatalf("Wait returned after %v for a 30ms context", d)
	}
}

// Many syncs and writers at once (run with -race): every listener that
// was registered before its user's wake is woken.
func TestNotifierConcurrent(t *testing.T) {
	n := New(func(id.RoomID) []id.UserID { return []id.UserID{alice, bob} })
	var syncs, writers sync.WaitGroup
	errs := make(chan string, 100)
	for i := range 50 {
		syncs.Add(1)
		go func() {
			defer syncs.Done()
			u := alice
			if i%2 == 1 {
				u = bob
			}
			l := n.Listen(u)
			defer l.Close()
			writers.Go(func() { n.Wake(int64(i+1), nil, []id.RoomID{room}) })
			if !woken(l, 5*time.Second) {
				errs <- string(u) + " not woken"
			}
		}()
	}
	syncs.Wait()
	writers.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := n.Pos(); got != 50 {
		t.Fatalf("Pos() = %d, want 50", got)
	}
}

func TestSubscribeStream(t *testing.T) {
	n := New(nil)
	ch, stop := n.SubscribeStream(false)
	typingCh, stopTyping := n.SubscribeStream(true)
	defer stopTyping()
	n.Wake(0, []id.UserID{"@a:x"}, nil) // typing: not a stream position
	select {
	case <-ch:
		t.Fatal("signalled for a non-stream wake")
	default:
	}
	select {
	case <-typingCh:
	default:
		t.Fatal("a subscriber to data outside the stream was not signalled for typing")
	}
	n.Wake(5, nil, nil)
	n.Wake(6, nil, nil) // coalesced with the pending signal
	<-ch
	select {
	case <-ch:
		t.Fatal("signals were not coalesced")
	default:
	}
	stop()
	n.Wake(7, nil, nil)
	select {
	case <-ch:
		t.Fatal("signalled after stop")
	default:
	}
}
