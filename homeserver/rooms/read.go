package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// ClientEvent is an event in the client-server API's format.
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        id.EventID      `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         id.RoomID       `json:"room_id,omitempty"`
	Sender         id.UserID       `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        id.EventID      `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

// StrippedState is the state clients see for rooms they are invited to.
type StrippedState struct {
	Content  json.RawMessage `json:"content"`
	Sender   id.UserID       `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// Viewer is who an event is rendered for: unsigned.transaction_id is only
// shown to the device that sent the event.
type Viewer struct {
	UserID   id.UserID
	DeviceID id.DeviceID
}

// Render turns stored events into client events. It reads the PDU with
// gjson rather than decoding it: rendering is on every read path.
func (s *Service) Render(ctx context.Context, events []*storage.Event, viewer Viewer, withRoomID bool) []*ClientEvent {
	out := make([]*ClientEvent, 0, len(events))
	now := time.Now().UnixMilli()
	var redactions, replaced map[id.EventID]*storage.Event
	for _, e := range events {
		if e.RedactedBy != "" && redactions == nil {
			redactions = s.loadRedactions(ctx, events)
		}
		if e.ReplacesState != "" && replaced == nil {
			replaced = s.loadReplaced(ctx, events)
		}
		ce := &ClientEvent{
			Content:        json.RawMessage(gjson.GetBytes(e.PDU, "content").Raw),
			EventID:        e.EventID,
			OriginServerTS: e.OriginServerTS,
			Sender:         e.Sender,
			StateKey:       e.StateKey,
			Type:           e.Type,
			Unsigned:       map[string]any{"age": now - e.OriginServerTS},
		}
		if len(ce.Content) == 0 {
			ce.Content = json.RawMessage("{}")
		}
		if withRoomID {
			ce.RoomID = e.RoomID
		}
		if e.Type == event.EventRedaction.Type {
			ce.Redacts = id.EventID(gjson.GetBytes(e.PDU, "redacts").Str)
			if ce.Redacts == "" {
				ce.Redacts = id.EventID(gjson.GetBytes(e.PDU, "content.redacts").Str)
			}
		}
		if e.TxnID != "" && e.Sender == viewer.UserID && e.DeviceID == viewer.DeviceID {
			ce.Unsigned["transaction_id"] = e.TxnID
		}
		if e.ReplacesState != "" {
			// prev_content lets clients tell a join from a profile change,
			// an unban from a leave.
			ce.Unsigned["replaces_state"] = e.ReplacesState
			if prev := replaced[e.ReplacesState]; prev != nil {
				if c := gjson.GetBytes(prev.PDU, "content"); c.IsObject() {
					ce.Unsigned["prev_content"] = json.RawMessage(c.Raw)
				}
			}
		}
		if r := redactions[e.RedactedBy]; r != nil {
			rendered := s.Render(ctx, []*storage.Event{r}, viewer, withRoomID)
			ce.Unsigned["redacted_because"] = rendered[0]
		}
		out = append(out, ce)
	}
	s.BundleAggregations(ctx, out, viewer)
	return out
}

func (s *Service) loadRedactions(ctx context.Context, events []*storage.Event) map[id.EventID]*storage.Event {
	return s.loadRelated(ctx, events, func(e *storage.Event) id.EventID { return e.RedactedBy })
}

// loadReplaced loads the state events the state events replaced.
func (s *Service) loadReplaced(ctx context.Context, events []*storage.Event) map[id.EventID]*storage.Event {
	return s.loadRelated(ctx, events, func(e *storage.Event) id.EventID { return e.ReplacesState })
}

// loadRelated loads, by ID, the event each event names with ref.
func (s *Service) loadRelated(ctx context.Context, events []*storage.Event, ref func(*storage.Event) id.EventID) map[id.EventID]*storage.Event {
	var ids []id.EventID
	for _, e := range events {
		if r := ref(e); r != "" {
			ids = append(ids, r)
		}
	}
	found, err := s.db.GetEvents(ctx, ids)
	if err != nil {
		s.log.Warn().Err(err).Msg("Failed to load related events (redactions, replaced state)")
	}
	out := make(map[id.EventID]*storage.Event, len(found))
	for _, r := range found {
		out[r.EventID] = r
	}
	return out
}

// Stripped returns the stripped state an invited (or knocking) user sees.
func (s *Service) Stripped(ctx context.Context, roomID id.RoomID, userID id.UserID) ([]*StrippedState, error) {
	rs, err := s.load(ctx, roomID, false)
	if err != nil {
		return nil, err
	}
	keys := []storage.StateKey{
		{Type: event.StateCreate.Type}, {Type: event.StateJoinRules.Type}, {Type: event.StateRoomName.Type},
		{Type: event.StateRoomAvatar.Type}, {Type: event.StateCanonicalAlias.Type}, {Type: event.StateTopic.Type},
		{Type: event.StateEncryption.Type}, {Type: event.StateMember.Type, StateKey: string(userID)},
	}
	var out []*StrippedState
	for _, k := range keys {
		if p := rs.state[k]; p != nil {
			out = append(out, &StrippedState{Content: json.RawMessage(p.Content), Sender: p.Sender, StateKey: k.StateKey, Type: k.Type})
			if k.Type == event.StateMember.Type {
				// The inviter's member event lets clients show who invited.
				inviter := rs.state[storage.StateKey{Type: event.StateMember.Type, StateKey: string(p.Sender)}]
				if inviter != nil && p.Sender != userID {
					out = append(out, &StrippedState{Content: json.RawMessage(inviter.Content), Sender: inviter.Sender, StateKey: string(p.Sender), Type: k.Type})
				}
			}
		}
	}
	return out, nil
}

// StateEvents returns stored events for a state map.
func (s *Service) StateEvents(ctx context.Context, state storage.StateMap) ([]*storage.Event, error) {
	ids := make([]id.EventID, 0, len(state))
	for _, eid := range state {
		ids = append(ids, eid)
	}
	return s.db.GetEvents(ctx, ids)
}

// CurrentStateEvents returns the room's current state as stored events.
func (s *Service) CurrentStateEvents(ctx context.Context, roomID id.RoomID) ([]*storage.Event, error) {
	rs, err := s.load(ctx, roomID, false)
	if err != nil {
		return nil, err
	}
	return s.StateEvents(ctx, rs.ids)
}

// StateAt returns the state before (or after) a stored event.
func (s *Service) StateAt(ctx context.Context, e *storage.Event, after bool) (storage.StateMap, error) {
	group := e.StateBefore
	if after {
		group = e.StateAfter
	}
	if group == 0 {
		return storage.StateMap{}, nil
	}
	return s.db.LoadStateGroup(ctx, group)
}

// History decides which events of one room a user may see (spec: "History
// visibility"), from the user's membership and the room's
// history_visibility at each event.
type History struct {
	memberships     []storage.Membership
	currentlyJoined bool
	// visibility is loaded on first need: members reading events from
	// while they were joined (the common case: every sync) never need it.
	visibility []hvChange
	loadedHV   bool
	loadHV     func() ([]hvChange, error)
}

type hvChange struct {
	pos int64
	hv  event.HistoryVisibility
}

// HistoryFor loads what visibility checks of user in room need.
func (s *Service) HistoryFor(ctx context.Context, roomID id.RoomID, userID id.UserID) (*History, error) {
	h := &History{}
	var err error
	if h.memberships, err = s.db.UserRoomMemberships(ctx, roomID, userID); err != nil {
		return nil, err
	}
	h.loadHV = func() ([]hvChange, error) {
		hvEvents, err := s.db.StateEventsOfType(ctx, roomID, event.StateHistoryVisibility.Type, "")
		if err != nil {
			return nil, err
		}
		var out []hvChange
		for _, e := range hvEvents {
			out = append(out, hvChange{pos: e.StreamPos, hv: event.HistoryVisibility(gjson.GetBytes(e.PDU, "content.history_visibility").Str)})
		}
		return out, nil
	}
	if n := len(h.memberships); n > 0 {
		h.currentlyJoined = h.memberships[n-1].Membership == string(event.MembershipJoin)
	}
	return h, nil
}

// MembershipAt is the user's membership at (and including) stream position pos.
func (h *History) MembershipAt(pos int64) event.Membership {
	m := event.MembershipLeave
	for _, c := range h.memberships {
		if c.StreamPos > pos {
			break
		}
		m = event.Membership(c.Membership)
	}
	return m
}

func (h *History) visibilityAt(pos int64) event.HistoryVisibility {
	if !h.loadedHV && h.loadHV != nil {
		var err error
		if h.visibility, err = h.loadHV(); err != nil {
			// Fail closed: "joined" shows only what members saw live.
			h.visibility = []hvChange{{pos: 0, hv: event.HistoryVisibilityJoined}}
		}
		h.loadedHV = true
	}
	hv := event.HistoryVisibilityShared
	for _, c := range h.visibility {
		if c.pos >= pos {
			break
		}
		if c.hv != "" {
			hv = c.hv
		}
	}
	return hv
}

// CanSee reports whether the user may see the event at pos.
func (h *History) CanSee(pos int64) bool {
	if h.canSeeAs(h.MembershipAt(pos), pos) {
		return true
	}
	// The user's own membership events: visible if the membership before
	// them allows it too (spec), such as a leave or kick after being joined.
	for _, c := range h.memberships {
		if c.StreamPos == pos {
			return h.canSeeAs(h.MembershipAt(pos-1), pos)
		}
		if c.StreamPos > pos {
			break
		}
	}
	return false
}

// canSeeAs applies the spec's rules for a user whose membership at the
// event is m.
func (h *History) canSeeAs(m event.Membership, pos int64) bool {
	if m == event.MembershipJoin {
		return true
	}
	hv := h.visibilityAt(pos)
	switch {
	case hv == event.HistoryVisibilityWorldReadable:
		return true
	case hv == event.HistoryVisibilityInvited && m == event.MembershipInvite:
		return true
	case hv == event.HistoryVisibilityShared && h.currentlyJoined:
		return true
	}
	return false
}

// Filter keeps the events the user may see.
func (h *History) Filter(events []*storage.Event) []*storage.Event {
	out := events[:0:0]
	for _, e := range events {
		if h.CanSee(e.StreamPos) {
			out = append(out, e)
		}
	}
	return out
}

// GetEvent returns an event if the user may see it.
func (s *Service) GetEvent(ctx context.Context, roomID id.RoomID, eventID id.EventID, userID id.UserID) (*storage.Event, error) {
	e, err := s.db.GetEvent(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && e.RoomID != roomID) {
		return nil, ErrEventNotFound
	} else if err != nil {
		return nil, err
	}
	h, err := s.HistoryFor(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if !h.CanSee(e.StreamPos) {
		return nil, ErrEventNotFound
	}
	return e, nil
}

// LastLeave is the stream position at which the user last stopped being
// joined (left, was kicked or banned) after having joined; 0 if never.
func (h *History) LastLeave() int64 {
	var last int64
	joined := false
	for _, m := range h.memberships {
		if m.Membership == string(event.MembershipJoin) {
			joined = true
		} else if joined {
			last, joined = m.StreamPos, false
		}
	}
	return last
}

// ContentOf returns a stored event's content JSON.
func ContentOf(e *storage.Event) json.RawMessage {
	return json.RawMessage(gjson.GetBytes(e.PDU, "content").Raw)
}

// PowerLevels returns the room's current power levels (with v12 creators).
func (s *Service) PowerLevels(ctx context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error) {
	rs, err := s.load(ctx, roomID, false)
	if err != nil {
		return nil, err
	}
	return rs.powerLevels(), nil
}
