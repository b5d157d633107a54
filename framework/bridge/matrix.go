package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"text/template"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bot"
)

// handleMatrixEvent is the appservice's event handler: events of portal
// rooms are bridged (commands aside), the others are the bot's.
func (b *Bridge) handleMatrixEvent(ctx context.Context, evt *event.Event) {
	log := b.Log.With().Stringer("room_id", evt.RoomID).Stringer("event_id", evt.ID).Str("event_type", evt.Type.Type).Logger()
	ctx = log.WithContext(ctx)
	if evt.RoomID == "" {
		return // presence, to-device: nothing to bridge
	}
	portal, err := b.PortalByRoom(ctx, evt.RoomID)
	if err != nil {
		log.Err(err).Msg("Failed to look up the portal")
		return
	}
	if portal == nil {
		if err := b.handleBotRoomEvent(ctx, evt); err != nil {
			log.Warn().Err(err).Msg("Failed to handle an event")
		}
		return
	}
	if evt.Type == event.StateMember && id.UserID(evt.GetStateKey()) == b.AS.Config.BotID() {
		b.botMembership(ctx, portal, evt)
		return
	}
	if evt.Sender == b.AS.Config.BotID() || b.AS.Config.IsGhost(evt.Sender) {
		return // the bridge's own echo
	}
	// Deliveries hold the portal's remote events back until the message
	// map is written, so a remote reply to a message just sent finds it.
	deliver := func(f func(context.Context, *Portal, *event.Event) error) error {
		for p := portal; p != nil; {
			p.remote.Lock()
			if p.RoomID() == evt.RoomID {
				defer p.remote.Unlock()
				return f(ctx, p, evt)
			}
			p.remote.Unlock()
			// The portal changed its ID (ChangePortalID) or was unlinked
			// while this waited.
			var lookupErr error
			if p, lookupErr = b.PortalByRoom(ctx, evt.RoomID); lookupErr != nil {
				return lookupErr
			}
		}
		return nil
	}
	switch evt.Type {
	case event.EventMessage, event.EventSticker:
		var handled bool
		if handled, err = b.Bot.HandleCommand(ctx, evt); !handled && err == nil {
			err = deliver(b.matrixMessage)
		}
	case event.EventReaction:
		err = deliver(b.matrixReaction)
	case event.EventRedaction:
		err = deliver(b.matrixRedaction)
	case event.StateMember:
		err = b.matrixMembership(ctx, portal, evt)
	}
	if err != nil {
		log.Warn().Err(err).Msg("Failed to bridge an event")
	}
}

// handleBotRoomEvent handles events outside portals: a direct chat invite
// from a user allowed to use the bridge becomes their management room, one
// to a ghost their direct chat with its remote user (DirectChatStarter);
// the rest is the bot's (commands, other invites).
func (b *Bridge) handleBotRoomEvent(ctx context.Context, evt *event.Event) error {
	if evt.Type == event.StateMember && id.UserID(evt.GetStateKey()) == b.AS.Config.BotID() {
		content := evt.Content.AsMember()
		if content.Membership == event.MembershipInvite && content.IsDirect && b.Config.PermissionOf(evt.Sender) >= PermissionUser {
			if err := b.AS.Bot().EnsureJoined(ctx, evt.RoomID); err != nil {
				return err
			}
			u, err := b.User(ctx, evt.Sender)
			if err != nil {
				return err
			}
			if err := u.setManagementRoom(ctx, evt.RoomID); err != nil {
				return err
			}
			_, err = b.Bot.Send(ctx, evt.RoomID, fmt.Sprintf("Hello! I bridge %s. Send `%shelp` for what I can do.",
				b.Network.Info().DisplayName, b.Bot.CommandPrefix))
			return err
		}
	}
	if evt.Type == event.StateMember && b.AS.Config.IsGhost(id.UserID(evt.GetStateKey())) && evt.Sender != b.AS.Config.BotID() {
		content := evt.Content.AsMember()
		if ds, ok := b.Network.(DirectChatStarter); ok && content.Membership == event.MembershipInvite && content.IsDirect {
			return b.startDirectChat(ctx, ds, evt)
		}
	}
	b.Bot.HandleEvent(ctx, evt)
	return nil
}

// botMembership notices the bot being removed from a portal room: the
// room is no longer bridged.
func (b *Bridge) botMembership(ctx context.Context, p *Portal, evt *event.Event) {
	switch evt.Content.AsMember().Membership {
	case event.MembershipLeave, event.MembershipBan:
		if evt.Sender == b.AS.Config.BotID() {
			return // Unlink made it leave
		}
		zerolog.Ctx(ctx).Info().Str("portal", p.ID).Stringer("by", evt.Sender).Msg("Bridge bot removed from a portal room; unlinking")
		if err := b.Unlink(ctx, p); err != nil && !errors.Is(err, ErrNotLinked) {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to unlink")
		}
	}
}

// sender decides how a Matrix user's message is delivered: as themselves
// (login nil when the network needs none), relayed, or not at all (a
// reason for them).
func (b *Bridge) sender(ctx context.Context, p *Portal, userID id.UserID) (u *User, login *Login, relayed bool, refusal string, err error) {
	u, err = b.User(ctx, userID)
	if err != nil {
		return nil, nil, false, "", err
	}
	login = u.Login()
	needsLogin := b.Network.Info().RequiresLogin
	if u.Permission >= PermissionUser && (!needsLogin || login != nil) {
		return u, login, false, "", nil
	}
	if p.Relay() && u.Permission >= PermissionRelay {
		return u, nil, true, "", nil
	}
	switch {
	case u.Permission < PermissionRelay:
		refusal = "you are not allowed to use this bridge"
	case u.Permission < PermissionUser:
		refusal = "this room does not relay messages"
	default:
		refusal = fmt.Sprintf("you are not logged in (send `%slogin` to the bridge bot), and this room does not relay messages", b.Bot.CommandPrefix)
	}
	return u, nil, false, refusal, nil
}

func (b *Bridge) matrixMessage(ctx context.Context, p *Portal, evt *event.Event) error {
	start := time.Now()
	content := evt.Content.AsMessage()
	u, login, relayed, refusal, err := b.sender(ctx, p, evt.Sender)
	if err != nil {
		return err
	}
	if refusal != "" {
		b.observeMatrix(start, errRefused)
		return b.reportUndelivered(ctx, evt, refusal)
	}
	msg := &MatrixMessage{Portal: p, Event: evt, Sender: u, Login: login, Relayed: relayed}
	editOf := content.RelatesTo.GetReplaceID()
	if editOf != "" {
		if content.NewContent != nil {
			content = content.NewContent
		}
		if msg.EditOf, err = b.MessageByEventID(ctx, editOf); err != nil {
			return err
		}
		original := id.UserID("")
		if msg.EditOf != nil {
			original = msg.EditOf.Sender
		} else if orig, err := b.AS.Bot().GetEvent(ctx, evt.RoomID, editOf); err == nil {
			original = orig.Sender // a message the remote side gave no ID for
		}
		if original != evt.Sender {
			return nil // only the sender may edit a message (clients ignore others' edits too)
		}
	} else {
		content.RemoveReplyFallback()
		if content.Format == "" && content.RelatesTo.GetReplyTo() != "" {
			// Plain-text clients quote the original too ("> <@u> text").
			content.Body = event.TrimReplyFallbackText(content.Body)
		}
		if msg.ReplyTo, err = b.MessageByEventID(ctx, content.RelatesTo.GetReplyTo()); err != nil {
			return err
		}
		if msg.ThreadRoot, err = b.MessageByEventID(ctx, content.RelatesTo.GetThreadParent()); err != nil {
			return err
		}
	}
	if relayed {
		msg.Unrelayed, msg.SenderName = content, b.relayName(ctx, evt)
		if content, err = b.relayContent(evt, msg.SenderName, content); err != nil {
			return err
		}
	}
	msg.Content = content
	var remoteID string
	es, canEdit := b.Network.(EditSender)
	switch {
	case msg.EditOf != nil && canEdit:
		remoteID, err = es.SendEdit(ctx, msg)
	case editOf != "":
		// No edits on the remote side, or no remote ID to edit (a
		// protocol without message IDs): "* new text", as chat networks
		// without edits write it.
		msg.Content, msg.EditOf = editFallback(content), nil
		if msg.Unrelayed != nil {
			msg.Unrelayed = editFallback(msg.Unrelayed)
		}
		remoteID, err = b.Network.SendMessage(ctx, msg)
	default:
		remoteID, err = b.Network.SendMessage(ctx, msg)
	}
	b.observeMatrix(start, err)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Message not delivered")
		return b.reportUndelivered(ctx, evt, err.Error())
	}
	if remoteID == "" {
		return nil
	}
	return b.AddMessage(ctx, &Message{PortalID: p.ID, RemoteID: remoteID, EventID: evt.ID, RoomID: evt.RoomID,
		Sender: evt.Sender, Timestamp: time.UnixMilli(evt.Timestamp)})
}

var errRefused = errors.New("refused")

// editFallback is an edit for networks without edits: "* new text".
func editFallback(content *event.MessageEventContent) *event.MessageEventContent {
	c := *content
	c.RelatesTo = nil
	c.Body = "* " + c.Body
	if c.FormattedBody != "" {
		c.FormattedBody = "* " + c.FormattedBody
	}
	return &c
}

// reportUndelivered tells the sender, in a reply, that their message did
// not reach the remote side and why.
func (b *Bridge) reportUndelivered(ctx context.Context, evt *event.Event, why string) error {
	if len(why) > 300 {
		why = why[:300] + "…"
	}
	content := bot.Notice(fmt.Sprintf("⚠️ Not delivered to %s: %s", b.Network.Info().DisplayName, why))
	content.SetReply(evt)
	_, err := b.AS.Bot().SendMessageEvent(ctx, evt.RoomID, event.EventMessage, &content)
	return err
}

// relayData is what the relay format templates see.
type relayData struct {
	DisplayName string
	UserID      id.UserID
	Message     string
}

// relayName is how a relayed message names its sender: their display
// name in the room, else their localpart.
func (b *Bridge) relayName(ctx context.Context, evt *event.Event) string {
	if member := b.AS.Bot().Member(ctx, evt.RoomID, evt.Sender); member != nil && member.Displayname != "" {
		return member.Displayname
	}
	return evt.Sender.Localpart()
}

// relayContent applies the relay format to a message: to its body, and
// (with the name HTML-escaped) to its formatted body.
func (b *Bridge) relayContent(evt *event.Event, name string, content *event.MessageEventContent) (*event.MessageEventContent, error) {
	tmpl := b.relayMessage
	c := *content
	if c.MsgType == event.MsgEmote {
		tmpl = b.relayEmote
		c.MsgType = event.MsgText
	}
	exec := func(t *template.Template, d relayData) (string, error) {
		var buf bytes.Buffer
		err := t.Execute(&buf, d)
		return buf.String(), err
	}
	var err error
	if c.Body, err = exec(tmpl, relayData{name, evt.Sender, content.Body}); err != nil {
		return nil, fmt.Errorf("relay format: %w", err)
	}
	if c.FormattedBody != "" {
		if c.FormattedBody, err = exec(tmpl, relayData{html.EscapeString(name), evt.Sender, content.FormattedBody}); err != nil {
			return nil, fmt.Errorf("relay format: %w", err)
		}
	}
	return &c, nil
}

func (b *Bridge) matrixReaction(ctx context.Context, p *Portal, evt *event.Event) error {
	rs, ok := b.Network.(ReactionSender)
	if !ok {
		return nil
	}
	rel := evt.Content.AsReaction().RelatesTo
	target, err := b.MessageByEventID(ctx, rel.EventID)
	if err != nil || target == nil || rel.Type != event.RelAnnotation {
		return err
	}
	u, login, relayed, _, err := b.sender(ctx, p, evt.Sender)
	if err != nil || relayed || (login == nil && b.Network.Info().RequiresLogin) || u.Permission < PermissionUser {
		return err // reactions are not relayed: "X reacted 👍" is noise
	}
	remoteID, err := rs.SendReaction(ctx, &MatrixReaction{Portal: p, Sender: u, Login: login, Target: target, Key: rel.Key})
	if err != nil {
		return err
	}
	return b.addReaction(ctx, &reaction{portalID: p.ID, targetID: target.RemoteID, sender: evt.Sender, key: rel.Key, eventID: evt.ID, remoteID: remoteID})
}

func (b *Bridge) matrixRedaction(ctx context.Context, p *Portal, evt *event.Event) error {
	redacts := evt.Redacts
	if redacts == "" {
		redacts = evt.Content.AsRedaction().Redacts
	}
	u, err := b.User(ctx, evt.Sender)
	if err != nil {
		return err
	}
	if r, err := b.findReaction(ctx, redacts, "", "", "", ""); err != nil {
		return err
	} else if r != nil {
		rs, ok := b.Network.(ReactionSender)
		if !ok {
			return nil
		}
		target, err := b.MessageByRemoteID(ctx, p.ID, r.targetID)
		if err != nil || target == nil {
			return err
		}
		err = rs.RemoveReaction(ctx, &MatrixReaction{Portal: p, Sender: u, Login: u.Login(), Target: target, Key: r.key, RemoteID: r.remoteID})
		if err != nil {
			return err
		}
		return b.deleteReaction(ctx, r)
	}
	target, err := b.MessageByEventID(ctx, redacts)
	if err != nil || target == nil {
		return err
	}
	if rs, ok := b.Network.(RedactionSender); ok {
		if err := rs.SendRedaction(ctx, p, u, u.Login(), target); err != nil {
			return err
		}
	}
	return b.deleteMessage(ctx, target)
}

func (b *Bridge) matrixMembership(ctx context.Context, p *Portal, evt *event.Event) error {
	mh, ok := b.Network.(MembershipHandler)
	target := id.UserID(evt.GetStateKey())
	if !ok || target == b.AS.Config.BotID() || b.AS.Config.IsGhost(target) {
		return nil
	}
	membership := evt.Content.AsMember().Membership
	if prev := evt.Unsigned.PrevContent; prev != nil && membership == event.MembershipJoin {
		_ = prev.ParseRaw(event.StateMember)
		if prev.AsMember().Membership == event.MembershipJoin {
			return nil // a profile change
		}
	}
	u, err := b.User(ctx, target)
	if err != nil {
		return err
	}
	return mh.MatrixMembership(ctx, p, u, membership)
}
