// Package notifier wakes long-polling /sync requests. Writers call Wake
// after their transaction commits, naming the users and rooms the new data
// concerns; each sync waits on its user. (With several homeserver processes
// on PostgreSQL, a LISTEN/NOTIFY bridge feeds Wake in the other processes.)
package notifier

import (
	"context"
	"sync"

	"maunium.net/go/mautrix/id"
)

// RoomUsers returns the local users who may see new data in a room (joined
// and, for their invite, invited members).
type RoomUsers func(roomID id.RoomID) []id.UserID

// Notifier tracks waiting syncs per user.
type Notifier struct {
	roomUsers RoomUsers

	mu      sync.Mutex
	pos     int64
	waiters map[id.UserID]map[chan struct{}]struct{}
	// peers forwards wake-ups to the other homeserver processes on the
	// same PostgreSQL database (nil with one process; see pgnotify.go).
	peers *peerBridge
	// streamSubs are told about every new stream position, whoever it
	// concerns (appservice pushers read the whole stream); those whose value
	// is true also about data outside the stream (typing).
	streamSubs map[chan struct{}]bool
}

// New returns a notifier; roomUsers resolves room-wide wake-ups.
func New(roomUsers RoomUsers) *Notifier {
	return &Notifier{roomUsers: roomUsers, waiters: map[id.UserID]map[chan struct{}]struct{}{}}
}

// SetRoomUsers sets the room resolver (for wiring after construction).
func (n *Notifier) SetRoomUsers(f RoomUsers) {
	n.mu.Lock()
	n.roomUsers = f
	n.mu.Unlock()
}

// Pos is the highest stream position announced so far.
func (n *Notifier) Pos() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pos
}

// Wake announces that data up to stream position pos is committed and
// concerns users and the members of rooms. pos may be 0 for data outside
// the stream (typing).
func (n *Notifier) Wake(pos int64, users []id.UserID, rooms []id.RoomID) {
	var targets []id.UserID
	targets = append(targets, users...)
	n.mu.Lock()
	resolve, peers := n.roomUsers, n.peers
	n.mu.Unlock()
	if resolve != nil {
		for _, r := range rooms {
			targets = append(targets, resolve(r)...)
		}
	}
	n.wake(pos, targets)
	// Rooms are resolved here, where the writer's room cache is current,
	// so peers receive users and need no room state of their own. Data
	// outside the stream (pos 0) lives in this process's memory only.
	if peers != nil && pos > 0 {
		peers.publish(pos, targets)
	}
}

// SubscribeStream returns a channel that receives (coalesced) a signal
// whenever a new stream position is announced — and, with outside, also
// when data outside the stream (typing) changes — and a function to stop.
func (n *Notifier) SubscribeStream(outside bool) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	if n.streamSubs == nil {
		n.streamSubs = map[chan struct{}]bool{}
	}
	n.streamSubs[ch] = outside
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		delete(n.streamSubs, ch)
		n.mu.Unlock()
	}
}

// wake wakes the listed users' waiting syncs in this process only.
func (n *Notifier) wake(pos int64, targets []id.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.pos {
		n.pos = pos
	}
	for ch, outside := range n.streamSubs {
		if pos == 0 && !outside {
			continue
		}
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending
		}
	}
	for _, u := range targets {
		for ch := range n.waiters[u] {
			close(ch)
			delete(n.waiters[u], ch)
		}
		if len(n.waiters[u]) == 0 {
			delete(n.waiters, u)
		}
	}
}

// Listener is a registered interest in a user's updates. Register before
// reading the database so nothing committed in between is missed.
type Listener struct {
	n    *Notifier
	user id.UserID
	ch   chan struct{}
}

// Listen registers interest in user's updates.
func (n *Notifier) Listen(user id.UserID) *Listener {
	l := &Listener{n: n, user: user, ch: make(chan struct{})}
	n.mu.Lock()
	if n.waiters[user] == nil {
		n.waiters[user] = map[chan struct{}]struct{}{}
	}
	n.waiters[user][l.ch] = struct{}{}
	n.mu.Unlock()
	return l
}

// Wait blocks until the user is woken or ctx ends; it reports whether the
// user was woken.
func (l *Listener) Wait(ctx context.Context) bool {
	select {
	case <-l.ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close unregisters the listener.
func (l *Listener) Close() {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	if w := l.n.waiters[l.user]; w != nil {
		delete(w, l.ch)
		if len(w) == 0 {
			delete(l.n.waiters, l.user)
		}
	}
}
