package typing

import (
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// recorder is a Waker that records the rooms it was told about.
type recorder struct {
	mu    sync.Mutex
	rooms []id.RoomID
	ch    chan id.RoomID
}

func newRecorder() *recorder { return &recorder{ch: make(chan id.RoomID, 100)} }

func (r *recorder) Wake(pos int64, users []id.UserID, rooms []id.RoomID) {
	if pos != 0 || len(users) != 0 {
		panic("typing wakes rooms only, at position 0")
	}
	r.mu.Lock()
	r.rooms = append(r.rooms, rooms...)
	r.mu.Unlock()
	for _, room := range rooms {
		r.ch <- room
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rooms)
}

const (
	room1, room2 = id.RoomID("!one:x"), id.RoomID("!two:x")
	alice, bob   = id.UserID("@alice:x"), id.UserID("@bob:x")
)

func TestStartRefreshStop(t *testing.T) {
	w := newRecorder()
	tr := New(w)
	defer tr.Close()
	s0 := tr.Serial()
	if users, changed := tr.Typing(room1); len(users) != 0 || changed != 0 {
		t.Fatalf("fresh tracker: %v, %d", users, changed)
	}

	tr.SetTyping(room1, bob, 10*time.Second)
	tr.SetTyping(room1, alice, 10*time.Second)
	users, changed := tr.Typing(room1)
	if !slices.Equal(users, []id.UserID{alice, bob}) || changed != s0+2 || tr.Serial() != s0+2 {
		t.Fatalf("typing = %v at %d (serial %d), want alice and bob at %d", users, changed, tr.Serial(), s0+2)
	}
	if w.count() != 2 {
		t.Fatalf("%d wake-ups, want 2", w.count())
	}

	// A refresh is no change.
	tr.SetTyping(room1, alice, 10*time.Second)
	if tr.Serial() != s0+2 || w.count() != 2 {
		t.Fatalf("refresh changed serial to %d / woke %d times", tr.Serial(), w.count())
	}

	rooms, all := tr.ChangedSince(s0 + 1)
	if all || !slices.Equal(rooms, []id.RoomID{room1}) {
		t.Fatalf("changed since %d = %v, %v", s0+1, rooms, all)
	}
	if rooms, all := tr.ChangedSince(s0 + 2); all || len(rooms) != 0 {
		t.Fatalf("changed since the latest serial = %v, %v", rooms, all)
	}

	tr.StopTyping(room1, bob)
	users, changed = tr.Typing(room1)
	if !slices.Equal(users, []id.UserID{alice}) || changed != s0+3 || w.count() != 3 {
		t.Fatalf("after stop: %v at %d, %d wake-ups", users, changed, w.count())
	}
	// Stopping someone who is not typing is no change.
	tr.StopTyping(room1, bob)
	tr.StopTyping(room2, bob)
	if tr.Serial() != s0+3 || w.count() != 3 {
		t.Fatalf("no-op stop changed serial to %d / woke %d times", tr.Serial(), w.count())
	}
}

func TestExpiry(t *testing.T) {
	w := newRecorder()
	tr := New(w)
	defer tr.Close()
	tr.SetTyping(room1, alice, 50*time.Millisecond)
	tr.SetTyping(room2, bob, 150*time.Millisecond)
	tr.SetTyping(room2, alice, 10*time.Second)
	<-w.ch
	<-w.ch
	<-w.ch
	before := tr.Serial()
	start := time.Now()
	select {
	case r := <-w.ch:
		if r != room1 {
			t.Fatalf("first expiry woke %s", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alice's typing did not expire")
	}
	if users, changed := tr.Typing(room1); len(users) != 0 || changed != before+1 {
		t.Fatalf("after expiry: %v at %d", users, changed)
	}
	select {
	case r := <-w.ch:
		if r != room2 {
			t.Fatalf("second expiry woke %s", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("bob's typing did not expire")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("expiry took %v", took)
	}
	if users, _ := tr.Typing(room2); !slices.Equal(users, []id.UserID{alice}) {
		t.Fatalf("room2 typing = %v, want alice still", users)
	}

	// Shortening a timeout by refreshing is honoured.
	tr.SetTyping(room2, alice, 50*time.Millisecond)
	select {
	case <-w.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("shortened timeout did not expire")
	}
	if users, _ := tr.Typing(room2); len(users) != 0 {
		t.Fatalf("room2 typing = %v after shortened timeout", users)
	}
}

func TestTimeoutCapped(t *testing.T) {
	tr := New(nil)
	defer tr.Close()
	before := time.Now()
	tr.SetTyping(room1, alice, 24*time.Hour)
	tr.SetTyping(room1, bob, 0)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for u, expiry := range tr.rooms[room1].users {
		if got := expiry.Sub(before); got < MaxTimeout-time.Second || got > MaxTimeout+time.Second {
			t.Errorf("%s expires in %v, want %v", u, got, MaxTimeout)
		}
	}
}

func TestTokensTheTrackerCannotPlace(t *testing.T) {
	tr := New(nil)
	defer tr.Close()
	start := tr.Serial()
	// A token from before this process, or from another process ahead
	// of this one.
	if _, all := tr.ChangedSince(start - 1); !all {
		t.Errorf("a token from before the process start is placed")
	}
	if _, all := tr.ChangedSince(start + 5); !all {
		t.Errorf("a token from the future is placed")
	}
	if _, all := tr.ChangedSince(start); all {
		t.Errorf("the start serial is not placed")
	}

	// Idle rooms are forgotten after a while; tokens from before their
	// last change can no longer be placed.
	// (Timeouts are long so that no timer reads the fake clock.)
	now := time.Now()
	tr.mu.Lock()
	tr.now = func() time.Time { return now }
	tr.mu.Unlock()
	tr.SetTyping(room1, alice, 10*time.Second)
	tr.StopTyping(room1, alice)
	stopped := tr.Serial()
	now = now.Add(idleRoomTTL + pruneEvery)
	tr.SetTyping(room2, bob, 10*time.Second)
	tr.mu.Lock()
	_, kept := tr.rooms[room1]
	tr.mu.Unlock()
	if kept {
		t.Fatalf("idle room not pruned")
	}
	if _, all := tr.ChangedSince(stopped - 1); !all {
		t.Errorf("a token from before a pruned change is placed")
	}
	if rooms, all := tr.ChangedSince(stopped); all || !slices.Equal(rooms, []id.RoomID{room2}) {
		t.Errorf("changed since the pruned room's last change = %v, %v; want room2", rooms, all)
	}
}
