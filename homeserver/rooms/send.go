package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// ErrNotBanned is an unban of a user who is not banned (M_BAD_STATE).
var ErrNotBanned = errors.New("user is not banned")

// Send authorises and stores one event. With req.TxnID set, a repeat of
// the same (sender, device, txnID) returns the first event instead of
// sending again; the lookup and the send share one transaction.
func (s *Service) Send(ctx context.Context, roomID id.RoomID, req EventRequest) (*storage.Event, error) {
	var sent *storage.Event
	events, err := s.write(ctx, roomID, func(ctx context.Context, w *work) error {
		if req.TxnID != "" {
			prev, err := s.db.LookupTxn(ctx, req.Sender, req.DeviceID, req.TxnScope, req.TxnID)
			if err == nil {
				var eventID id.EventID
				if err := json.Unmarshal(prev, &eventID); err != nil {
					return fmt.Errorf("stored transaction: %w", err)
				}
				sent, err = s.db.GetEvent(ctx, eventID)
				return err
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		if req.Type == event.EventRedaction.Type {
			if err := w.checkRedaction(ctx, req); err != nil {
				return err
			}
		}
		if err := w.checkRelation(ctx, req); err != nil {
			return err
		}
		e, err := w.append(ctx, req)
		if err != nil {
			return err
		}
		if req.Type == event.EventRedaction.Type {
			if err := w.applyRedaction(ctx, e, req.Redacts); err != nil {
				return err
			}
		}
		if req.TxnID != "" {
			resp, _ := json.Marshal(e.EventID)
			if err := s.db.SaveTxn(ctx, req.Sender, req.DeviceID, req.TxnScope, req.TxnID, resp); err != nil {
				return err
			}
		}
		sent = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	_ = events
	return sent, nil
}

// checkRedaction enforces what the auth rules leave to the server since
// room v3: you may redact your own events, or others' with the redact level.
func (w *work) checkRedaction(ctx context.Context, req EventRequest) error {
	if req.Redacts == "" {
		return fmt.Errorf("%w: redactions need a target event", ErrBadContent)
	}
	target, err := w.s.db.GetEvent(ctx, req.Redacts)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && target.RoomID != w.rs.roomID) {
		return ErrEventNotFound
	} else if err != nil {
		return err
	}
	if target.Sender == req.Sender {
		return nil
	}
	pl := w.rs.powerLevels()
	if pl.GetUserLevel(req.Sender) < pl.Redact() {
		return forbidden("You need power level %d to redact other users' events", pl.Redact())
	}
	return nil
}

// applyRedaction replaces the target's stored PDU with its redacted form
// (the room version's redaction algorithm) and remembers the redaction.
func (w *work) applyRedaction(ctx context.Context, redaction *storage.Event, targetID id.EventID) error {
	target, err := w.s.db.GetEvent(ctx, targetID)
	if err != nil {
		return err
	}
	if target.RedactedBy != "" {
		return nil
	}
	p, err := parsePDU(target.PDU)
	if err != nil {
		return err
	}
	redacted, err := canonicaljson.Marshal(p.Redact(w.rs.version))
	if err != nil {
		return fmt.Errorf("redact: %w", err)
	}
	return w.s.db.SetRedactedBy(ctx, targetID, redaction.EventID, redacted)
}

// powerLevels parses the room's current m.room.power_levels.
func (rs *roomState) powerLevels() *event.PowerLevelsEventContent {
	var pl event.PowerLevelsEventContent
	if p := rs.state[storage.StateKey{Type: event.StatePowerLevels.Type}]; p != nil {
		_ = json.Unmarshal(p.Content, &pl)
	}
	if create := rs.state[storage.StateKey{Type: event.StateCreate.Type}]; create != nil && rs.version.PrivilegedRoomCreators() {
		pl.CreateEvent = createEventFromPDU(create, rs)
	}
	return &pl
}

func createEventFromPDU(p *pdu.PDU, rs *roomState) *event.Event {
	evt := &event.Event{Sender: p.Sender, Type: event.StateCreate, RoomID: rs.roomID}
	_ = evt.Content.UnmarshalJSON(p.Content)
	_ = evt.Content.ParseRaw(event.StateCreate)
	return evt
}

// MembershipRequest changes target's membership.
type MembershipRequest struct {
	Sender     id.UserID
	Target     id.UserID
	Membership event.Membership
	Reason     string
	// Profile fills displayname/avatar_url on joins and invites.
	Profile  *event.MemberEventContent
	IsDirect bool
	DeviceID id.DeviceID
}

// SetMembership sends an m.room.member event after the checks the auth
// rules don't make (unbanning a user who isn't banned).
func (s *Service) SetMembership(ctx context.Context, roomID id.RoomID, req MembershipRequest) (*storage.Event, error) {
	var sent *storage.Event
	_, err := s.write(ctx, roomID, func(ctx context.Context, w *work) error {
		current := w.rs.membership(req.Target)
		if req.Membership == event.MembershipLeave && req.Sender != req.Target && current == event.MembershipBan {
			// An unban: fine.
		} else if req.Membership == event.MembershipLeave && req.Sender != req.Target &&
			current != event.MembershipJoin && current != event.MembershipInvite && current != event.MembershipKnock {
			return forbidden("%s is not in the room", req.Target)
		}
		content := map[string]any{"membership": req.Membership}
		if req.Reason != "" {
			content["reason"] = req.Reason
		}
		if req.Profile != nil && (req.Membership == event.MembershipJoin || req.Membership == event.MembershipInvite || req.Membership == event.MembershipKnock) {
			if req.Profile.Displayname != "" {
				content["displayname"] = req.Profile.Displayname
			}
			if req.Profile.AvatarURL != "" {
				content["avatar_url"] = req.Profile.AvatarURL
			}
		}
		if req.IsDirect {
			content["is_direct"] = true
		}
		if req.Membership == event.MembershipJoin {
			if err := w.authoriseRestrictedJoin(content, req.Target); err != nil {
				return err
			}
		}
		target := string(req.Target)
		e, err := w.append(ctx, EventRequest{Type: event.StateMember.Type, StateKey: &target, Sender: req.Sender, Content: content, DeviceID: req.DeviceID})
		sent = e
		return err
	})
	return sent, err
}

// Unban lifts a ban (membership ban → leave), refusing if there is none.
func (s *Service) Unban(ctx context.Context, roomID id.RoomID, sender, target id.UserID, reason string) (*storage.Event, error) {
	m, err := s.Membership(ctx, roomID, target)
	if err != nil {
		return nil, err
	}
	if m != event.MembershipBan {
		return nil, ErrNotBanned
	}
	return s.SetMembership(ctx, roomID, MembershipRequest{Sender: sender, Target: target, Membership: event.MembershipLeave, Reason: reason})
}

// authoriseRestrictedJoin adds join_authorised_via_users_server to a join
// into a restricted room when the joiner is in one of the allowed rooms,
// naming a local member who can invite. Invited users need none.
func (w *work) authoriseRestrictedJoin(content map[string]any, joiner id.UserID) error {
	jr := w.rs.state[storage.StateKey{Type: event.StateJoinRules.Type}]
	if jr == nil {
		return nil
	}
	rule := event.JoinRule(gjson.GetBytes(jr.Content, "join_rule").Str)
	if rule != event.JoinRuleRestricted && rule != event.JoinRuleKnockRestricted {
		return nil
	}
	current := w.rs.membership(joiner)
	if current == event.MembershipJoin || current == event.MembershipInvite {
		return nil
	}
	allowed := false
	for _, a := range gjson.GetBytes(jr.Content, "allow").Array() {
		if a.Get("type").Str != "m.room_membership" {
			continue
		}
		other := id.RoomID(a.Get("room_id").Str)
		if m, err := w.s.Membership(context.Background(), other, joiner); err == nil && m == event.MembershipJoin {
			allowed = true
			break
		}
	}
	if !allowed {
		return forbidden("You are not invited to this room and not a member of a room that grants access")
	}
	pl := w.rs.powerLevels()
	for k, p := range w.rs.state {
		if k.Type != event.StateMember.Type || gjson.GetBytes(p.Content, "membership").Str != string(event.MembershipJoin) {
			continue
		}
		user := id.UserID(k.StateKey)
		if user.Homeserver() == w.s.serverName && pl.GetUserLevel(user) >= pl.Invite() {
			content["join_authorised_via_users_server"] = user
			return nil
		}
	}
	return forbidden("No member of this server can authorise your join")
}
