// Package syncapi computes /sync responses: which rooms changed for a user
// between two stream positions, their timelines (history visibility and
// filters applied), the state clients need to render them, and the
// long-poll that waits for the notifier when nothing is new.
package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/notifier"
	"github.com/switchboard-im/switchboard/homeserver/push"
	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/typing"
)

// Token is a sync position, "s{pos}_{typing}" or "s{pos}_{typing}_d{todevice}":
// Pos is the stream position of everything persisted, Typing the serial
// of the in-memory typing notifications (which have no stream position),
// ToDevice, when not 0, the position up to which to-device messages were
// sent: a device with more than maxToDevicePerSync waiting gets them over
// several syncs while every other stream is at Pos.
type Token struct {
	Pos      int64
	Typing   int64
	ToDevice int64
}

func (t Token) String() string {
	s := "s" + strconv.FormatInt(t.Pos, 10) + "_" + strconv.FormatInt(t.Typing, 10)
	if t.ToDevice != 0 {
		s += "_d" + strconv.FormatInt(t.ToDevice, 10)
	}
	return s
}

// toDeviceAcked is the position up to which the token's holder received
// its to-device messages.
func (t Token) toDeviceAcked() int64 {
	if t.ToDevice != 0 {
		return t.ToDevice
	}
	return t.Pos
}

// ErrBadToken is an unparseable since token.
var ErrBadToken = errors.New("invalid sync token")

// ParseToken parses a since / next_batch token.
func ParseToken(raw string) (Token, error) {
	if !strings.HasPrefix(raw, "s") {
		return Token{}, ErrBadToken
	}
	parts := strings.Split(raw[1:], "_")
	pos, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || pos < 0 || len(parts) > 3 {
		return Token{}, ErrBadToken
	}
	t := Token{Pos: pos}
	if len(parts) > 1 {
		if t.Typing, err = strconv.ParseInt(parts[1], 10, 64); err != nil || t.Typing < 0 {
			return Token{}, ErrBadToken
		}
	}
	if len(parts) > 2 {
		td, ok := strings.CutPrefix(parts[2], "d")
		if t.ToDevice, err = strconv.ParseInt(td, 10, 64); !ok || err != nil || t.ToDevice <= 0 || t.ToDevice > pos {
			return Token{}, ErrBadToken
		}
	}
	return t, nil
}

// Syncer computes sync responses.
type Syncer struct {
	DB       *storage.DB
	Rooms    *rooms.Service
	Notifier *notifier.Notifier
	Typing   *typing.Tracker

	// Caches of the unread counts and parsed push rules; a Syncer must be
	// long-lived (one per process) for them to help.
	cacheOnce  sync.Once
	unreadMemo unreadCache
	pushRules  *push.Cache
}

// Request is one /sync call.
type Request struct {
	User      id.UserID
	Device    id.DeviceID
	Since     *Token
	Filter    *mautrix.Filter
	FullState bool
	Timeout   time.Duration
}

// Events is a list wrapper as the spec nests it ({"events": [...]}).
type Events[T any] struct {
	Events []T `json:"events"`
}

// Response is the /sync body.
type Response struct {
	NextBatch   string                  `json:"next_batch"`
	Rooms       RoomsResponse           `json:"rooms"`
	AccountData Events[json.RawMessage] `json:"account_data"`
	Presence    Events[json.RawMessage] `json:"presence"`
	ToDevice    Events[json.RawMessage] `json:"to_device"`
	DeviceLists map[string][]id.UserID  `json:"device_lists"`
	OTKCounts   map[string]int          `json:"device_one_time_keys_count"`
	// FallbackKeyTypes are the device's unused fallback key algorithms.
	FallbackKeyTypes []string `json:"device_unused_fallback_key_types"`

	// next is NextBatch while the response is computed.
	next Token
}

// RoomsResponse holds the four room sections.
type RoomsResponse struct {
	Join   map[id.RoomID]*JoinedRoom  `json:"join"`
	Invite map[id.RoomID]*InvitedRoom `json:"invite"`
	Leave  map[id.RoomID]*LeftRoom    `json:"leave"`
	Knock  map[id.RoomID]*KnockedRoom `json:"knock"`
}

// JoinedRoom is a room the user is joined to.
type JoinedRoom struct {
	Summary             Summary                    `json:"summary"`
	State               Events[*rooms.ClientEvent] `json:"state"`
	Timeline            Timeline                   `json:"timeline"`
	Ephemeral           Events[json.RawMessage]    `json:"ephemeral"`
	AccountData         Events[json.RawMessage]    `json:"account_data"`
	UnreadNotifications Unread                     `json:"unread_notifications"`
	// UnreadThreadNotifications is set when the filter asks for it.
	UnreadThreadNotifications map[id.EventID]Unread `json:"unread_thread_notifications,omitempty"`
}

// LeftRoom is a room the user left (or was removed from).
type LeftRoom struct {
	State       Events[*rooms.ClientEvent] `json:"state"`
	Timeline    Timeline                   `json:"timeline"`
	AccountData Events[json.RawMessage]    `json:"account_data"`
}

// InvitedRoom carries stripped state.
type InvitedRoom struct {
	InviteState Events[*rooms.StrippedState] `json:"invite_state"`
}

// KnockedRoom carries stripped state.
type KnockedRoom struct {
	KnockState Events[*rooms.StrippedState] `json:"knock_state"`
}

// Timeline is a room's new events.
type Timeline struct {
	Events    []*rooms.ClientEvent `json:"events"`
	Limited   bool                 `json:"limited"`
	PrevBatch string               `json:"prev_batch,omitempty"`
}

// Summary is the room summary (spec: for naming rooms without a name).
type Summary struct {
	Heroes       []id.UserID `json:"m.heroes,omitempty"`
	JoinedCount  *int        `json:"m.joined_member_count,omitempty"`
	InvitedCount *int        `json:"m.invited_member_count,omitempty"`
}

// Unread holds notification counts.
type Unread struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

const defaultTimelineLimit = 10

// Sync answers one request, waiting up to req.Timeout when there is
// nothing new since req.Since.
func (s *Syncer) Sync(ctx context.Context, req Request) (*Response, error) {
	deadline := time.Now().Add(req.Timeout)
	for {
		// Listen before reading the position: a write committed after the
		// read wakes us; one committed before is included.
		var l *notifier.Listener
		if s.Notifier != nil && req.Since != nil && req.Timeout > 0 {
			l = s.Notifier.Listen(req.User)
		}
		upto, err := s.DB.CurrentStreamPos(ctx)
		if err != nil {
			closeListener(l)
			return nil, err
		}
		if l != nil && !req.FullState && upto == req.Since.Pos && req.Since.ToDevice == 0 &&
			(s.Typing == nil || s.Typing.Serial() == req.Since.Typing) {
			// Nothing at all happened since the token (and no to-device
			// messages wait beyond it): wait first rather than compute an
			// answer that is certainly empty.
			if woken, err := s.wait(ctx, l, deadline); err != nil || !woken {
				if err != nil {
					return nil, err
				}
				return s.compute(ctx, req, upto)
			}
			continue
		}
		resp, err := s.compute(ctx, req, upto)
		if err != nil || l == nil || !resp.empty() || req.FullState {
			closeListener(l)
			return resp, err
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			closeListener(l)
			return resp, nil
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		woken := l.Wait(wctx)
		cancel()
		l.Close()
		if !woken {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return resp, nil
		}
	}
}

// wait blocks on the listener until woken or the deadline; it closes it.
func (s *Syncer) wait(ctx context.Context, l *notifier.Listener, deadline time.Time) (bool, error) {
	defer l.Close()
	wait := time.Until(deadline)
	if wait <= 0 {
		return false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if l.Wait(wctx) {
		return true, nil
	}
	return false, ctx.Err()
}

func closeListener(l *notifier.Listener) {
	if l != nil {
		l.Close()
	}
}

func (r *Response) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Knock) == 0 &&
		len(r.AccountData.Events) == 0 && len(r.Presence.Events) == 0 && len(r.ToDevice.Events) == 0 &&
		len(r.DeviceLists["changed"]) == 0 && len(r.DeviceLists["left"]) == 0
}

func newResponse(upto int64) *Response {
	return &Response{
		NextBatch: Token{Pos: upto}.String(),
		next:      Token{Pos: upto},
		Rooms: RoomsResponse{Join: map[id.RoomID]*JoinedRoom{}, Invite: map[id.RoomID]*InvitedRoom{},
			Leave: map[id.RoomID]*LeftRoom{}, Knock: map[id.RoomID]*KnockedRoom{}},
		AccountData: Events[json.RawMessage]{Events: []json.RawMessage{}},
		Presence:    Events[json.RawMessage]{Events: []json.RawMessage{}},
		ToDevice:    Events[json.RawMessage]{Events: []json.RawMessage{}},
		DeviceLists: map[string][]id.UserID{"changed": {}, "left": {}},
		OTKCounts:   map[string]int{},

		FallbackKeyTypes: []string{},
	}
}

func (s *Syncer) compute(ctx context.Context, req Request, upto int64) (*Response, error) {
	resp := newResponse(upto)
	var since int64
	if req.Since != nil {
		since = req.Since.Pos
	}
	roomFilter := req.Filter.Room
	if roomFilter == nil {
		roomFilter = &mautrix.RoomFilter{}
	}
	// Forgotten rooms matter only for left rooms; read them on first need.
	var forgotten map[id.RoomID]bool
	isForgotten := func(roomID id.RoomID) (bool, error) {
		if forgotten == nil {
			var err error
			if forgotten, err = s.DB.ForgottenRooms(ctx, req.User); err != nil {
				return false, err
			}
		}
		return forgotten[roomID], nil
	}
	current, err := s.DB.UserRooms(ctx, req.User)
	if err != nil {
		return nil, err
	}
	changed := map[id.RoomID]storage.Membership{}
	if since > 0 {
		changes, err := s.DB.MembershipChanges(ctx, req.User, since, upto)
		if err != nil {
			return nil, err
		}
		for _, m := range changes {
			changed[m.RoomID] = m
		}
	}
	var active map[id.RoomID]int64
	if since > 0 {
		if active, err = s.DB.RoomsWithEvents(ctx, since, upto); err != nil {
			return nil, err
		}
	}
	initial := since == 0 || req.FullState
	joined := map[id.RoomID]bool{}
	for _, m := range current {
		if m.Membership == string(event.MembershipJoin) && m.StreamPos <= upto {
			joined[m.RoomID] = true
		}
	}
	for _, m := range current {
		if !roomWanted(roomFilter, m.RoomID) || m.StreamPos > upto {
			continue
		}
		_, membershipChanged := changed[m.RoomID]
		switch event.Membership(m.Membership) {
		case event.MembershipJoin:
			_, hasEvents := active[m.RoomID]
			if !initial && !hasEvents && !membershipChanged {
				continue
			}
			// A join in this window is a fresh start: send full state.
			fresh := initial || (membershipChanged && changed[m.RoomID].Membership == string(event.MembershipJoin))
			jr, err := s.joinedRoom(ctx, req, m.RoomID, since, upto, fresh)
			if err != nil {
				return nil, err
			}
			resp.Rooms.Join[m.RoomID] = jr
		case event.MembershipInvite:
			if !initial && !membershipChanged {
				continue
			}
			stripped, err := s.Rooms.Stripped(ctx, m.RoomID, req.User)
			if err != nil {
				return nil, err
			}
			resp.Rooms.Invite[m.RoomID] = &InvitedRoom{InviteState: Events[*rooms.StrippedState]{Events: stripped}}
		case event.MembershipKnock:
			if !initial && !membershipChanged {
				continue
			}
			stripped, err := s.Rooms.Stripped(ctx, m.RoomID, req.User)
			if err != nil {
				return nil, err
			}
			resp.Rooms.Knock[m.RoomID] = &KnockedRoom{KnockState: Events[*rooms.StrippedState]{Events: stripped}}
		case event.MembershipLeave, event.MembershipBan:
			if gone, err := isForgotten(m.RoomID); err != nil {
				return nil, err
			} else if gone {
				continue
			}
			if (initial && !roomFilter.IncludeLeave) || (!initial && !membershipChanged) {
				continue
			}
			// A rejected invite the user never joined has nothing to show.
			lr, err := s.leftRoom(ctx, req, m.RoomID, since, m.StreamPos, initial)
			if err != nil {
				return nil, err
			}
			if lr != nil {
				resp.Rooms.Leave[m.RoomID] = lr
			}
		}
	}
	if err := s.accountData(ctx, req, resp, since, upto, joined); err != nil {
		return nil, err
	}
	toDeviceAcked := since
	if req.Since != nil {
		toDeviceAcked = req.Since.toDeviceAcked()
	}
	if err := s.toDevice(ctx, req, resp, toDeviceAcked, upto); err != nil {
		return nil, err
	}
	if err := s.presence(ctx, req, resp, since, upto, joined); err != nil {
		return nil, err
	}
	if err := s.e2ee(ctx, req, resp, since, upto); err != nil {
		return nil, err
	}
	if err := s.ephemeral(ctx, req, resp, since, upto, joined, s.Typing); err != nil {
		return nil, err
	}
	threads, err := s.unread(ctx, req, resp, upto)
	if err != nil {
		return nil, err
	}
	for roomID, counts := range threads {
		resp.Rooms.Join[roomID].UnreadThreadNotifications = counts
	}
	resp.NextBatch = resp.next.String()
	return resp, nil
}

func roomWanted(f *mautrix.RoomFilter, roomID id.RoomID) bool {
	if f.Rooms != nil && !slices.Contains(f.Rooms, roomID) {
		return false
	}
	return !slices.Contains(f.NotRooms, roomID)
}

func timelineFilter(req Request) *mautrix.FilterPart {
	if req.Filter.Room != nil && req.Filter.Room.Timeline != nil {
		return req.Filter.Room.Timeline
	}
	return &mautrix.FilterPart{}
}

func stateFilter(req Request) *mautrix.FilterPart {
	if req.Filter.Room != nil && req.Filter.Room.State != nil {
		return req.Filter.Room.State
	}
	return &mautrix.FilterPart{}
}

// timeline reads the room's visible events in (since, upto], newest last,
// at most limit of them, and whether more were left out.
func (s *Syncer) timeline(ctx context.Context, req Request, roomID id.RoomID, since, upto int64) ([]*storage.Event, bool, error) {
	tf := timelineFilter(req)
	limit := defaultTimelineLimit
	if tf.Limit > 0 {
		limit = tf.Limit
	}
	h, err := s.Rooms.HistoryFor(ctx, roomID, req.User)
	if err != nil {
		return nil, false, err
	}
	var picked []*storage.Event
	cursor, limited := upto, false
	for len(picked) < limit {
		page, err := s.DB.RoomEvents(ctx, roomID, since, cursor, max(2*limit, 20), true)
		if err != nil {
			return nil, false, err
		}
		for _, e := range page {
			cursor = e.StreamPos - 1
			if !h.CanSee(e.StreamPos) || !MatchFilter(tf, e) {
				continue
			}
			if len(picked) == limit {
				limited = true
				break
			}
			picked = append(picked, e)
		}
		if limited || len(page) < max(2*limit, 20) {
			break
		}
	}
	if !limited && len(picked) == limit && cursor > since {
		// There may be more before the oldest picked event.
		more, err := s.DB.RoomEvents(ctx, roomID, since, cursor, 1, true)
		if err != nil {
			return nil, false, err
		}
		limited = len(more) > 0
	}
	slices.Reverse(picked)
	return picked, limited, nil
}

func (s *Syncer) joinedRoom(ctx context.Context, req Request, roomID id.RoomID, since, upto int64, fresh bool) (*JoinedRoom, error) {
	viewer := rooms.Viewer{UserID: req.User, DeviceID: req.Device}
	tlSince := since
	if fresh {
		tlSince = 0
	}
	events, limited, err := s.timeline(ctx, req, roomID, tlSince, upto)
	if err != nil {
		return nil, err
	}
	jr := &JoinedRoom{
		Timeline:    Timeline{Events: s.Rooms.Render(ctx, events, viewer, false), Limited: limited},
		Ephemeral:   Events[json.RawMessage]{Events: []json.RawMessage{}},
		AccountData: Events[json.RawMessage]{Events: []json.RawMessage{}},
	}
	if len(events) > 0 {
		jr.Timeline.PrevBatch = fmt.Sprintf("t%d_%d", events[0].Depth, events[0].StreamPos-1)
	} else {
		jr.Timeline.PrevBatch = Token{Pos: upto}.String()
	}
	state, err := s.stateBeforeTimeline(ctx, req, roomID, events, since, upto, fresh, limited)
	if err != nil {
		return nil, err
	}
	jr.State.Events = s.Rooms.Render(ctx, state, viewer, false)
	// The summary only changes with membership; an incremental sync may
	// leave it out otherwise (spec: clients keep the last one they saw).
	if fresh || hasMemberEvent(events) || hasMemberEvent(state) {
		if err := s.summary(ctx, roomID, req.User, jr); err != nil {
			return nil, err
		}
	}
	return jr, nil
}

// stateBeforeTimeline is the state section: for a fresh room, the full
// state at the start of the timeline; for an incremental limited timeline,
// the state events that happened in the gap; otherwise nothing. Lazy
// loading trims members to the timeline's senders (and the user).
func (s *Syncer) stateBeforeTimeline(ctx context.Context, req Request, roomID id.RoomID, timeline []*storage.Event, since, upto int64, fresh, limited bool) ([]*storage.Event, error) {
	sf := stateFilter(req)
	var state []*storage.Event
	switch {
	case fresh:
		var m storage.StateMap
		var err error
		if len(timeline) > 0 {
			m, err = s.Rooms.StateAt(ctx, timeline[0], false)
		} else {
			var all []*storage.Event
			all, err = s.Rooms.CurrentStateEvents(ctx, roomID)
			state = all
		}
		if err != nil {
			return nil, err
		}
		if m != nil {
			if state, err = s.Rooms.StateEvents(ctx, m); err != nil {
				return nil, err
			}
		}
	case limited && len(timeline) > 0:
		gap, err := s.DB.StateEventsBetween(ctx, roomID, since, timeline[0].StreamPos)
		if err != nil {
			return nil, err
		}
		// Keep only the latest event per state key.
		latest := map[storage.StateKey]*storage.Event{}
		for _, e := range gap {
			latest[storage.StateKey{Type: e.Type, StateKey: *e.StateKey}] = e
		}
		for _, e := range latest {
			state = append(state, e)
		}
	default:
		return []*storage.Event{}, nil
	}
	senders := map[id.UserID]bool{req.User: true}
	inTimeline := map[id.EventID]bool{}
	for _, e := range timeline {
		senders[e.Sender] = true
		inTimeline[e.EventID] = true
	}
	out := make([]*storage.Event, 0, len(state))
	for _, e := range state {
		if inTimeline[e.EventID] || !MatchFilter(sf, e) {
			continue
		}
		if sf.LazyLoadMembers && e.Type == event.StateMember.Type && !senders[id.UserID(*e.StateKey)] {
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *storage.Event) int { return int(a.StreamPos - b.StreamPos) })
	return out, nil
}

func hasMemberEvent(events []*storage.Event) bool {
	for _, e := range events {
		if e.Type == event.StateMember.Type {
			return true
		}
	}
	return false
}

// summary fills heroes and member counts from current state.
func (s *Syncer) summary(ctx context.Context, roomID id.RoomID, self id.UserID, jr *JoinedRoom) error {
	members, err := s.DB.RoomMembers(ctx, roomID, string(event.MembershipJoin), string(event.MembershipInvite))
	if err != nil {
		return err
	}
	joined, invited := 0, 0
	var heroes []id.UserID
	slices.SortFunc(members, func(a, b storage.Membership) int { return int(a.StreamPos - b.StreamPos) })
	for _, m := range members {
		if m.Membership == string(event.MembershipJoin) {
			joined++
		} else {
			invited++
		}
		if m.UserID != self && len(heroes) < 5 {
			heroes = append(heroes, m.UserID)
		}
	}
	jr.Summary = Summary{Heroes: heroes, JoinedCount: &joined, InvitedCount: &invited}
	return nil
}

// leftRoom shows a room the user left, with the timeline up to the leave.
func (s *Syncer) leftRoom(ctx context.Context, req Request, roomID id.RoomID, since, leavePos int64, initial bool) (*LeftRoom, error) {
	viewer := rooms.Viewer{UserID: req.User, DeviceID: req.Device}
	tlSince := since
	if initial {
		tlSince = 0
	}
	events, limited, err := s.timeline(ctx, req, roomID, tlSince, leavePos)
	if err != nil {
		return nil, err
	}
	lr := &LeftRoom{
		Timeline:    Timeline{Events: s.Rooms.Render(ctx, events, viewer, false), Limited: limited},
		State:       Events[*rooms.ClientEvent]{Events: []*rooms.ClientEvent{}},
		AccountData: Events[json.RawMessage]{Events: []json.RawMessage{}},
	}
	if len(events) > 0 {
		lr.Timeline.PrevBatch = fmt.Sprintf("t%d_%d", events[0].Depth, events[0].StreamPos-1)
	}
	return lr, nil
}
