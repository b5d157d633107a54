// Package typing tracks who is typing in which room (spec: "Typing
// Notifications"). Typing is ephemeral and kept in memory only: every
// change — a user starting, stopping, or their timeout running out — takes
// the next value of one process-wide serial, which /sync tokens carry, and
// wakes the room's waiting syncs.
//
// The tracker forgets rooms that have been idle for a while, and a new
// process knows nothing of its predecessor's typing. A token from before
// what the tracker remembers (its serial is below Floor) cannot tell which
// rooms changed, so ChangedSince reports every room as changed for it and
// the client gets each room's current (usually empty) typing list: nobody
// stays "typing" forever in a client that missed a stop.
//
// With several homeserver processes on one database each process only
// knows the typing of requests it served; sharing typing between them is
// left to the cross-process notifier.
package typing

import (
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// Limits on the timeout a client asks for (spec: the client re-sends its
// typing request before the timeout runs out, recommended every 20-30 s).
const (
	DefaultTimeout = 30 * time.Second
	MaxTimeout     = 30 * time.Second
)

// Waker is told about every change; *notifier.Notifier satisfies it (pos 0:
// typing has no stream position).
type Waker interface {
	Wake(pos int64, users []id.UserID, rooms []id.RoomID)
}

// Tracker holds the typing users of every room.
type Tracker struct {
	waker Waker
	now   func() time.Time

	mu     sync.Mutex
	serial int64
	rooms  map[id.RoomID]*room
	timer  *time.Timer
	// timerAt is when timer fires (zero: no timer armed).
	timerAt time.Time
	closed  bool
	// floor is the highest serial the tracker no longer remembers rooms
	// for (pruned rooms, or everything before this process started).
	floor     int64
	lastPrune time.Time
}

// idleRoomTTL is how long a room nobody types in is remembered; pruneEvery
// is how often SetTyping looks for such rooms.
const (
	idleRoomTTL = time.Hour
	pruneEvery  = 10 * time.Minute
)

type room struct {
	// users maps each typing user to when their typing expires.
	users map[id.UserID]time.Time
	// changed is the serial of the room's latest change, at changedAt.
	changed   int64
	changedAt time.Time
}

// New returns a tracker that wakes rooms through waker (nil: nobody). The
// serial starts at the current Unix time in milliseconds rather than 0, so
// that a restarted process's serials stay above those its predecessor
// handed out: such old tokens fall below the floor and their clients get
// every room's current typing list once.
func New(waker Waker) *Tracker {
	now := time.Now()
	start := now.UnixMilli()
	return &Tracker{waker: waker, now: time.Now, serial: start, floor: start, lastPrune: now, rooms: map[id.RoomID]*room{}}
}

// Serial is the serial of the latest change.
func (t *Tracker) Serial() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serial
}

// SetTyping marks userID as typing in roomID for timeout (DefaultTimeout
// when ≤ 0, at most MaxTimeout). Refreshing a user who is already typing
// only extends the timeout: the room's typing set is unchanged, so nobody
// is woken.
func (t *Tracker) SetTyping(roomID id.RoomID, userID id.UserID, timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	timeout = min(timeout, MaxTimeout)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	r := t.rooms[roomID]
	if r == nil {
		r = &room{users: map[id.UserID]time.Time{}}
		t.rooms[roomID] = r
	}
	_, already := r.users[userID]
	now := t.now()
	expiry := now.Add(timeout)
	r.users[userID] = expiry
	if !already {
		t.changedLocked(r, now)
	}
	t.armLocked(expiry)
	if now.Sub(t.lastPrune) >= pruneEvery {
		t.pruneLocked(now)
	}
	t.mu.Unlock()
	if !already {
		t.wake(roomID)
	}
}

// StopTyping marks userID as no longer typing in roomID.
func (t *Tracker) StopTyping(roomID id.RoomID, userID id.UserID) {
	t.mu.Lock()
	r := t.rooms[roomID]
	if r == nil {
		t.mu.Unlock()
		return
	}
	if _, ok := r.users[userID]; !ok {
		t.mu.Unlock()
		return
	}
	delete(r.users, userID)
	t.changedLocked(r, t.now())
	t.mu.Unlock()
	t.wake(roomID)
}

// Typing returns the users typing in roomID, sorted, and the serial of the
// room's latest change (0 when it never had any).
func (t *Tracker) Typing(roomID id.RoomID) ([]id.UserID, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rooms[roomID]
	if r == nil {
		return []id.UserID{}, 0
	}
	users := make([]id.UserID, 0, len(r.users))
	for u := range r.users {
		users = append(users, u)
	}
	slices.Sort(users)
	return users, r.changed
}

// ChangedSince returns the rooms whose typing set changed after serial. all
// is set when serial is older than what the tracker remembers, or newer
// than its serial (a token from another process): then any room may have
// changed.
func (t *Tracker) ChangedSince(serial int64) (rooms []id.RoomID, all bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if serial < t.floor || serial > t.serial {
		return nil, true
	}
	for roomID, r := range t.rooms {
		if r.changed > serial {
			rooms = append(rooms, roomID)
		}
	}
	return rooms, false
}

func (t *Tracker) changedLocked(r *room, now time.Time) {
	t.serial++
	r.changed, r.changedAt = t.serial, now
}

// pruneLocked forgets rooms nobody has typed in for idleRoomTTL, raising
// the floor past their last change.
func (t *Tracker) pruneLocked(now time.Time) {
	t.lastPrune = now
	for roomID, r := range t.rooms {
		if len(r.users) == 0 && now.Sub(r.changedAt) >= idleRoomTTL {
			t.floor = max(t.floor, r.changed)
			delete(t.rooms, roomID)
		}
	}
}

// Close stops the expiry timer; later SetTyping calls are ignored.
func (t *Tracker) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.timer != nil {
		t.timer.Stop()
		t.timer, t.timerAt = nil, time.Time{}
	}
}

// armLocked makes sure the expiry timer fires no later than at.
func (t *Tracker) armLocked(at time.Time) {
	if t.timer != nil && !t.timerAt.After(at) {
		return
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	t.timerAt = at
	t.timer = time.AfterFunc(max(at.Sub(t.now()), 0), t.expire)
}

// expire removes every typing user whose timeout has run out, wakes their
// rooms, and re-arms the timer for the next expiry.
func (t *Tracker) expire() {
	t.mu.Lock()
	t.timer, t.timerAt = nil, time.Time{}
	if t.closed {
		t.mu.Unlock()
		return
	}
	now := t.now()
	var woken []id.RoomID
	var next time.Time
	for roomID, r := range t.rooms {
		changed := false
		for u, expiry := range r.users {
			if !expiry.After(now) {
				delete(r.users, u)
				changed = true
			} else if next.IsZero() || expiry.Before(next) {
				next = expiry
			}
		}
		if changed {
			t.changedLocked(r, now)
			woken = append(woken, roomID)
		}
	}
	if !next.IsZero() {
		t.armLocked(next)
	}
	t.mu.Unlock()
	for _, roomID := range woken {
		t.wake(roomID)
	}
}

func (t *Tracker) wake(roomID id.RoomID) {
	if t.waker != nil {
		t.waker.Wake(0, nil, []id.RoomID{roomID})
	}
}
