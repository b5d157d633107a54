package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Room presets (spec: POST /createRoom).
const (
	PresetPrivateChat        = "private_chat"
	PresetTrustedPrivateChat = "trusted_private_chat"
	PresetPublicChat         = "public_chat"
)

// InitialState is one entry of createRoom's initial_state.
type InitialState struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRequest is a parsed /createRoom request.
type CreateRequest struct {
	Creator                   id.UserID
	Visibility                string // "public" lists the room in the directory
	Preset                    string
	Name                      string
	Topic                     string
	Alias                     id.RoomAlias // already validated and free
	Invite                    []id.UserID
	InitialState              []InitialState
	PowerLevelContentOverride json.RawMessage
	CreationContent           json.RawMessage
	IsDirect                  bool
	RoomVersion               id.RoomVersion
	// CreatorProfile is put into the creator's join event.
	CreatorProfile *event.MemberEventContent
	// InviteeProfiles are put into invite events (displayname, avatar_url).
	InviteeProfiles map[id.UserID]*event.MemberEventContent
}

// CreateRoom creates a room and all its initial events in one transaction.
func (s *Service) CreateRoom(ctx context.Context, req CreateRequest) (id.RoomID, error) {
	version := req.RoomVersion
	if version == "" {
		version = DefaultVersion
	}
	if !slices.Contains(SupportedVersions, version) {
		return "", fmt.Errorf("%w: %s", ErrUnsupportedVersion, version)
	}
	preset := req.Preset
	if preset == "" {
		preset = PresetPrivateChat
		if req.Visibility == "public" {
			preset = PresetPublicChat
		}
	}
	createContent := map[string]any{}
	if len(req.CreationContent) > 0 {
		if err := json.Unmarshal(req.CreationContent, &createContent); err != nil {
			return "", fmt.Errorf("%w: creation_content must be an object", ErrBadContent)
		}
	}
	createContent["room_version"] = string(version)
	if version.CreatorInContent() {
		createContent["creator"] = req.Creator
	} else {
		delete(createContent, "creator")
	}

	var roomID id.RoomID
	if !version.RoomIDIsCreateEventID() {
		roomID = id.RoomID("!" + random.String(18) + ":" + s.serverName)
	}
	rs := &roomState{roomID: roomID, version: version, state: map[storage.StateKey]*pdu.PDU{}, ids: storage.StateMap{}}
	lock := s.roomLock(roomID)
	lock.Lock()
	defer lock.Unlock()
	var w *work
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		w = &work{s: s, rs: rs.clone()}
		if roomID != "" {
			if err := s.db.InsertRoom(ctx, &storage.Room{RoomID: roomID, Version: version, Creator: req.Creator,
				IsPublic: req.Visibility == "public", CreatedTS: time.Now().UnixMilli()}); err != nil {
				return err
			}
		}
		empty := ""
		createEvt, err := w.appendCreate(ctx, EventRequest{Type: event.StateCreate.Type, StateKey: &empty, Sender: req.Creator, Content: createContent},
			req.Visibility == "public")
		if err != nil {
			return err
		}
		roomID = createEvt.RoomID
		if err := s.createInitialEvents(ctx, w, req, preset); err != nil {
			return err
		}
		return w.finish(ctx)
	})
	if err != nil {
		return "", err
	}
	s.commit(w)
	return roomID, nil
}

// appendCreate appends the create event; in v12 rooms its event ID names
// the room, so the room row is written only once that ID is known.
func (w *work) appendCreate(ctx context.Context, req EventRequest, public bool) (*storage.Event, error) {
	if w.rs.roomID != "" {
		return w.append(ctx, req)
	}
	// Built twice (to learn the ID, then for real): the timestamp must not
	// differ between the two, or the room ID would name another event.
	if req.TS == 0 {
		req.TS = time.Now().UnixMilli()
	}
	p, err := w.s.buildPDU(w.rs, req)
	if err != nil {
		return nil, err
	}
	eventID, err := p.GetEventID(w.rs.version)
	if err != nil {
		return nil, err
	}
	w.rs.roomID = id.RoomID("!" + strings.TrimPrefix(string(eventID), "$"))
	if err := w.s.db.InsertRoom(ctx, &storage.Room{RoomID: w.rs.roomID, Version: w.rs.version, Creator: req.Sender,
		IsPublic: public, CreatedTS: time.Now().UnixMilli()}); err != nil {
		return nil, err
	}
	return w.append(ctx, req)
}

func (s *Service) createInitialEvents(ctx context.Context, w *work, req CreateRequest, preset string) error {
	empty := ""
	creator := string(req.Creator)
	join := req.CreatorProfile
	if join == nil {
		join = &event.MemberEventContent{}
	}
	join.Membership = event.MembershipJoin
	if _, err := w.append(ctx, EventRequest{Type: event.StateMember.Type, StateKey: &creator, Sender: req.Creator, Content: join}); err != nil {
		return err
	}

	pl, err := defaultPowerLevels(w.rs.version, req, preset)
	if err != nil {
		return err
	}
	if _, err := w.append(ctx, EventRequest{Type: event.StatePowerLevels.Type, StateKey: &empty, Sender: req.Creator, Content: pl}); err != nil {
		return err
	}
	if req.Alias != "" {
		if _, err := w.append(ctx, EventRequest{Type: event.StateCanonicalAlias.Type, StateKey: &empty, Sender: req.Creator,
			Content: map[string]any{"alias": req.Alias}}); err != nil {
			return err
		}
	}
	joinRule, guest := event.JoinRuleInvite, event.GuestAccessCanJoin
	if preset == PresetPublicChat {
		joinRule, guest = event.JoinRulePublic, event.GuestAccessForbidden
	}
	presetEvents := []EventRequest{
		{Type: event.StateJoinRules.Type, Content: map[string]any{"join_rule": joinRule}},
		{Type: event.StateHistoryVisibility.Type, Content: map[string]any{"history_visibility": event.HistoryVisibilityShared}},
		{Type: event.StateGuestAccess.Type, Content: map[string]any{"guest_access": guest}},
	}
	initial := map[storage.StateKey]EventRequest{}
	var order []storage.StateKey
	for _, st := range req.InitialState {
		if st.Type == "" || len(st.Content) == 0 {
			return fmt.Errorf("%w: initial_state entries need type and content", ErrBadContent)
		}
		if st.Type == event.StateCreate.Type || st.Type == event.StateMember.Type {
			return fmt.Errorf("%w: initial_state cannot contain %s", ErrBadContent, st.Type)
		}
		key := storage.StateKey{Type: st.Type, StateKey: st.StateKey}
		if _, dup := initial[key]; !dup {
			order = append(order, key)
		}
		stateKey := st.StateKey
		initial[key] = EventRequest{Type: st.Type, StateKey: &stateKey, Content: st.Content}
	}
	for _, ev := range presetEvents {
		key := storage.StateKey{Type: ev.Type}
		if _, overridden := initial[key]; overridden {
			continue
		}
		ev.StateKey, ev.Sender = &empty, req.Creator
		if _, err := w.append(ctx, ev); err != nil {
			return err
		}
	}
	for _, key := range order {
		ev := initial[key]
		ev.Sender = req.Creator
		if _, err := w.append(ctx, ev); err != nil {
			return err
		}
	}
	if req.Name != "" {
		if _, err := w.append(ctx, EventRequest{Type: event.StateRoomName.Type, StateKey: &empty, Sender: req.Creator,
			Content: map[string]any{"name": req.Name}}); err != nil {
			return err
		}
	}
	if req.Topic != "" {
		if _, err := w.append(ctx, EventRequest{Type: event.StateTopic.Type, StateKey: &empty, Sender: req.Creator,
			Content: map[string]any{"topic": req.Topic}}); err != nil {
			return err
		}
	}
	for _, invitee := range req.Invite {
		content := map[string]any{"membership": event.MembershipInvite}
		if p := req.InviteeProfiles[invitee]; p != nil {
			if p.Displayname != "" {
				content["displayname"] = p.Displayname
			}
			if p.AvatarURL != "" {
				content["avatar_url"] = p.AvatarURL
			}
		}
		if req.IsDirect {
			content["is_direct"] = true
		}
		target := string(invitee)
		if _, err := w.append(ctx, EventRequest{Type: event.StateMember.Type, StateKey: &target, Sender: req.Creator, Content: content}); err != nil {
			return err
		}
	}
	return nil
}

// defaultPowerLevels follows Synapse's defaults, which clients expect,
// then applies power_level_content_override.
func defaultPowerLevels(version id.RoomVersion, req CreateRequest, preset string) (map[string]any, error) {
	users := map[string]any{}
	if !version.PrivilegedRoomCreators() {
		users[string(req.Creator)] = 100
	}
	if preset == PresetTrustedPrivateChat {
		for _, u := range req.Invite {
			users[string(u)] = 100
		}
	}
	pl := map[string]any{
		"users":          users,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         0,
		"events": map[string]any{
			"m.room.name":               50,
			"m.room.power_levels":       100,
			"m.room.history_visibility": 100,
			"m.room.canonical_alias":    50,
			"m.room.avatar":             50,
			"m.room.tombstone":          100,
			"m.room.server_acl":         100,
			"m.room.encryption":         100,
		},
		"notifications": map[string]any{"room": 50},
	}
	if len(req.PowerLevelContentOverride) > 0 {
		var override map[string]any
		if err := json.Unmarshal(req.PowerLevelContentOverride, &override); err != nil {
			return nil, fmt.Errorf("%w: power_level_content_override must be an object", ErrBadContent)
		}
		for k, v := range override {
			pl[k] = v
		}
	}
	return pl, nil
}
