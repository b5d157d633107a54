// Package rooms owns the room model: building events as signed PDUs,
// authorising them with the room version's auth rules (mautrix eventauth)
// against the state before them, and persisting each event together with
// its state in one transaction. It keeps each room's current state in
// memory and checks it against the database row before every write, so
// several homeserver processes on one PostgreSQL stay consistent.
package rooms

import (
	"context"
	"encoding/json/v2"
	"errors"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/notifier"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Supported room versions; DefaultVersion follows the spec's recommendation.
var (
	SupportedVersions = []id.RoomVersion{id.RoomV10, id.RoomV11, id.RoomV12}
	DefaultVersion    = id.RoomV12
)

// MaxEventBytes is the spec's size limit for a whole PDU.
const MaxEventBytes = 65536

// Errors the client API maps to Matrix error codes.
var (
	ErrRoomNotFound       = errors.New("room not found")
	ErrEventNotFound      = errors.New("event not found")
	ErrTooLarge           = errors.New("event too large")
	ErrUnsupportedVersion = errors.New("unsupported room version")
	ErrBadContent         = errors.New("invalid event content")
)

// ForbiddenError is an event the auth rules (or a server policy) refused.
type ForbiddenError struct{ Reason string }

func (e *ForbiddenError) Error() string { return e.Reason }

func forbidden(format string, args ...any) error {
	return &ForbiddenError{Reason: fmt.Sprintf(format, args...)}
}

// Service is the rooms subsystem.
type Service struct {
	db         *storage.DB
	serverName string
	key        *federation.SigningKey
	notifier   *notifier.Notifier
	log        zerolog.Logger

	mu     sync.Mutex
	rooms  map[id.RoomID]*roomState
	locks  map[id.RoomID]*sync.Mutex
	queues map[id.RoomID]*writeQueue
}

// New returns the rooms service and wires the notifier's room resolver.
func New(db *storage.DB, serverName string, key *federation.SigningKey, n *notifier.Notifier, log zerolog.Logger) *Service {
	s := &Service{db: db, serverName: serverName, key: key, notifier: n, log: log,
		rooms: map[id.RoomID]*roomState{}, locks: map[id.RoomID]*sync.Mutex{}, queues: map[id.RoomID]*writeQueue{}}
	if n != nil {
		n.SetRoomUsers(s.localAudience)
	}
	return s
}

// roomState is a room's current state as of lastPos. It is copied on
// write: a writer works on a clone and swaps it in after commit.
type roomState struct {
	roomID      id.RoomID
	version     id.RoomVersion
	lastPos     int64
	state       map[storage.StateKey]*pdu.PDU
	ids         storage.StateMap
	extremities []id.EventID
	depth       int64
	group       int64
	chain       int
}

func (rs *roomState) clone() *roomState {
	c := *rs
	c.state = make(map[storage.StateKey]*pdu.PDU, len(rs.state))
	for k, v := range rs.state {
		c.state[k] = v
	}
	c.ids = make(storage.StateMap, len(rs.ids))
	for k, v := range rs.ids {
		c.ids[k] = v
	}
	c.extremities = append([]id.EventID(nil), rs.extremities...)
	return &c
}

// Membership returns a user's current membership ("leave" when none).
func (rs *roomState) membership(userID id.UserID) event.Membership {
	if p := rs.state[storage.StateKey{Type: event.StateMember.Type, StateKey: string(userID)}]; p != nil {
		return event.Membership(gjsonString(p.Content, "membership"))
	}
	return event.MembershipLeave
}

func (s *Service) roomLock(roomID id.RoomID) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locks[roomID]
	if l == nil {
		l = &sync.Mutex{}
		s.locks[roomID] = l
	}
	return l
}

func (s *Service) cached(roomID id.RoomID) *roomState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rooms[roomID]
}

func (s *Service) store(rs *roomState) {
	s.mu.Lock()
	s.rooms[rs.roomID] = rs
	s.mu.Unlock()
}

func (s *Service) forget(roomID id.RoomID) {
	s.mu.Lock()
	delete(s.rooms, roomID)
	s.mu.Unlock()
}

// load returns the room's current state, from cache when the cache is as
// new as the room row says (another process may have written), else from
// the database.
func (s *Service) load(ctx context.Context, roomID id.RoomID, forUpdate bool) (*roomState, error) {
	row, err := s.db.GetRoom(ctx, roomID, forUpdate)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrRoomNotFound
	} else if err != nil {
		return nil, err
	}
	if rs := s.cached(roomID); rs != nil && rs.lastPos == row.LastPos {
		return rs, nil
	}
	rs := &roomState{roomID: roomID, version: row.Version, lastPos: row.LastPos, state: map[storage.StateKey]*pdu.PDU{}}
	if rs.ids, err = s.db.CurrentState(ctx, roomID); err != nil {
		return nil, err
	}
	ids := make([]id.EventID, 0, len(rs.ids))
	for _, eid := range rs.ids {
		ids = append(ids, eid)
	}
	events, err := s.db.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, e := range events {
		p, err := parsePDU(e.PDU)
		if err != nil {
			return nil, fmt.Errorf("room %s: state event %s: %w", roomID, e.EventID, err)
		}
		p.InternalMeta.EventID = e.EventID
		rs.state[storage.StateKey{Type: e.Type, StateKey: *e.StateKey}] = p
	}
	if rs.extremities, err = s.db.Extremities(ctx, roomID); err != nil {
		return nil, err
	}
	latest, err := s.db.RoomEvents(ctx, roomID, 0, row.LastPos, 1, true)
	if err != nil {
		return nil, err
	}
	if len(latest) == 1 {
		rs.group, rs.depth = latest[0].StateAfter, latest[0].Depth
		if rs.chain, err = s.db.StateGroupChain(ctx, rs.group); err != nil {
			return nil, err
		}
	}
	s.store(rs)
	return rs, nil
}

// State returns a room's current state (read-only: do not modify).
func (s *Service) State(ctx context.Context, roomID id.RoomID) (map[storage.StateKey]*pdu.PDU, id.RoomVersion, error) {
	rs, err := s.load(ctx, roomID, false)
	if err != nil {
		return nil, "", err
	}
	return rs.state, rs.version, nil
}

// Membership returns a user's current membership in a room.
func (s *Service) Membership(ctx context.Context, roomID id.RoomID, userID id.UserID) (event.Membership, error) {
	rs, err := s.load(ctx, roomID, false)
	if err != nil {
		return "", err
	}
	return rs.membership(userID), nil
}

// Version returns a room's version.
func (s *Service) Version(ctx context.Context, roomID id.RoomID) (id.RoomVersion, error) {
	rs, err := s.load(ctx, roomID, false)
	if err != nil {
		return "", err
	}
	return rs.version, nil
}

// localAudience lists the local users a new room event concerns: joined
// members see it, invited and knocking users see their own stripped state.
func (s *Service) localAudience(roomID id.RoomID) []id.UserID {
	// load checks rooms.last_pos, so members who joined through another
	// process are seen; on database trouble a stale answer beats none.
	rs, err := s.load(context.Background(), roomID, false)
	if err != nil {
		rs = s.cached(roomID)
	}
	if rs == nil {
		return nil
	}
	var users []id.UserID
	for k, p := range rs.state {
		if k.Type != event.StateMember.Type {
			continue
		}
		switch event.Membership(gjsonString(p.Content, "membership")) {
		case event.MembershipJoin, event.MembershipInvite, event.MembershipKnock:
			if id.UserID(k.StateKey).Homeserver() == s.serverName {
				users = append(users, id.UserID(k.StateKey))
			}
		}
	}
	return users
}

func parsePDU(data []byte) (*pdu.PDU, error) {
	var p pdu.PDU
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, err
	}
	return &p, nil
}
