package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// RemoteUser is a remote user as the network sees them.
type RemoteUser struct {
	// ID is stable for the user on the network; it becomes their ghost's
	// localpart after the ghost prefix.
	ID   string
	Name string
	// Avatar is an avatar already in the media repository; AvatarURL one
	// on the web, uploaded once (and again only when the URL changes).
	Avatar    id.ContentURI
	AvatarURL string
}

// Ghost is a remote user's Matrix user.
type Ghost struct {
	UserID id.UserID
	Intent *appservice.IntentAPI
}

// Ghost returns the ghost of a remote user: registered, with the user's
// name and avatar (written only when they change).
func (b *Bridge) Ghost(ctx context.Context, u RemoteUser) (*Ghost, error) {
	if u.ID == "" {
		return nil, errors.New("remote user without an ID")
	}
	userID := b.AS.Config.GhostID(u.ID)
	intent, err := b.AS.EnsureGhost(ctx, userID, u.Name, u.Avatar)
	if err != nil {
		return nil, err
	}
	if u.AvatarURL != "" && u.Avatar.IsEmpty() {
		if err := b.AS.EnsureGhostAvatarURL(ctx, userID, u.AvatarURL); err != nil {
			// A missing avatar is not worth losing the message over.
			b.Log.Warn().Err(err).Stringer("ghost", userID).Msg("Failed to set a ghost's avatar")
		}
	}
	return &Ghost{UserID: userID, Intent: intent}, nil
}

// ErrNoRoom is returned for remote events of a portal that has no room:
// the network decides which channels are bridged (EnsureRoom).
var ErrNoRoom = errors.New("portal has no room")

// portalRoom returns the portal (holding its remote lock: unlock with the
// returned func) and its room.
func (b *Bridge) portalRoom(ctx context.Context, portalID string) (*Portal, id.RoomID, func(), error) {
	p, err := b.Portal(ctx, portalID)
	if err != nil {
		return nil, "", nil, err
	}
	p.remote.Lock()
	room := p.RoomID()
	if room == "" {
		p.remote.Unlock()
		return nil, "", nil, fmt.Errorf("%s: %w", portalID, ErrNoRoom)
	}
	return p, room, p.remote.Unlock, nil
}

// joinedGhost returns the sender's ghost, joined to room (the bot invites
// it where the room is not public).
func (b *Bridge) joinedGhost(ctx context.Context, room id.RoomID, sender RemoteUser) (*Ghost, error) {
	g, err := b.Ghost(ctx, sender)
	if err != nil {
		return nil, err
	}
	if err := g.Intent.EnsureJoined(ctx, room, appservice.EnsureJoinedParams{BotOverride: b.AS.Bot().Client}); err != nil {
		return nil, fmt.Errorf("%s join %s: %w", g.UserID, room, err)
	}
	return g, nil
}

// RemoteMessage is a message from the remote side.
type RemoteMessage struct {
	PortalID string
	Sender   RemoteUser
	// ID is the remote message's ID ("" where the protocol has none: the
	// message cannot be replied to, edited or deleted later).
	ID        string
	Timestamp time.Time
	Content   *event.MessageEventContent
	// ReplyTo and ThreadRoot are remote IDs of the message replied to and
	// of the thread's root.
	ReplyTo    string
	ThreadRoot string
}

// RemoteMessage shows a remote message in its portal, from the sender's
// ghost, and records it in the message map. A message already bridged (the
// same ID: an echo of one sent from Matrix, a resend after a reconnect) is
// not shown again; its event ID is returned.
func (b *Bridge) RemoteMessage(ctx context.Context, msg *RemoteMessage) (id.EventID, error) {
	start := time.Now()
	eventID, err := b.remoteMessage(ctx, msg)
	b.observeRemote(start, err)
	return eventID, err
}

func (b *Bridge) remoteMessage(ctx context.Context, msg *RemoteMessage) (id.EventID, error) {
	p, room, unlock, err := b.portalRoom(ctx, msg.PortalID)
	if err != nil {
		return "", err
	}
	defer unlock()
	if existing, err := b.MessageByRemoteID(ctx, p.ID, msg.ID); err != nil {
		return "", err
	} else if existing != nil {
		return existing.EventID, nil
	}
	g, err := b.joinedGhost(ctx, room, msg.Sender)
	if err != nil {
		return "", err
	}
	content := *msg.Content
	if msg.ThreadRoot != "" {
		if root, err := b.MessageByRemoteID(ctx, p.ID, msg.ThreadRoot); err != nil {
			return "", err
		} else if root != nil {
			content.GetRelatesTo().SetThread(root.EventID, root.EventID)
		}
	}
	if msg.ReplyTo != "" {
		if target, err := b.MessageByRemoteID(ctx, p.ID, msg.ReplyTo); err != nil {
			return "", err
		} else if target != nil {
			content.GetRelatesTo().SetReplyTo(target.EventID)
		}
	}
	ts := msg.Timestamp
	if ts.IsZero() {
		ts = time.Now()
	}
	resp, err := g.Intent.SendMassagedMessageEvent(ctx, room, event.EventMessage, &content, ts.UnixMilli())
	if err != nil {
		return "", fmt.Errorf("send to %s: %w", room, err)
	}
	if msg.ID != "" {
		err = b.AddMessage(ctx, &Message{PortalID: p.ID, RemoteID: msg.ID, EventID: resp.EventID, RoomID: room, Sender: g.UserID, Timestamp: ts})
	}
	return resp.EventID, err
}

// remoteAct is a remote user acting on a bridged message (an edit, a
// reaction): the portal (its remote lock held until unlock), the room,
// the message and the user's ghost, joined.
type remoteAct struct {
	portal *Portal
	room   id.RoomID
	target *Message
	ghost  *Ghost
}

func (b *Bridge) startRemoteAct(ctx context.Context, portalID string, sender RemoteUser, targetID, what string) (*remoteAct, func(), error) {
	p, room, unlock, err := b.portalRoom(ctx, portalID)
	if err != nil {
		return nil, nil, err
	}
	target, err := b.MessageByRemoteID(ctx, p.ID, targetID)
	if err == nil && target == nil {
		err = fmt.Errorf("%s %s: message not bridged", what, targetID)
	}
	var g *Ghost
	if err == nil {
		g, err = b.joinedGhost(ctx, room, sender)
	}
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return &remoteAct{portal: p, room: room, target: target, ghost: g}, unlock, nil
}

// RemoteEdit shows an edit of a remote message, as an m.replace of its
// event from the sender's ghost.
func (b *Bridge) RemoteEdit(ctx context.Context, portalID string, sender RemoteUser, targetID string, content *event.MessageEventContent) error {
	act, unlock, err := b.startRemoteAct(ctx, portalID, sender, targetID, "edit of")
	if err != nil {
		return err
	}
	defer unlock()
	edit := *content
	edit.SetEdit(act.target.EventID)
	_, err = act.ghost.Intent.SendMessageEvent(ctx, act.room, event.EventMessage, &edit)
	return err
}

// RemoteReaction shows a remote user's reaction to a bridged message.
func (b *Bridge) RemoteReaction(ctx context.Context, portalID string, sender RemoteUser, targetID, key, reactionID string) error {
	act, unlock, err := b.startRemoteAct(ctx, portalID, sender, targetID, "reaction to")
	if err != nil {
		return err
	}
	defer unlock()
	if existing, err := b.findReaction(ctx, "", act.portal.ID, targetID, act.ghost.UserID, key); err != nil {
		return err
	} else if existing != nil {
		return nil
	}
	resp, err := act.ghost.Intent.SendReaction(ctx, act.room, act.target.EventID, key)
	if err != nil {
		return err
	}
	return b.addReaction(ctx, &reaction{portalID: act.portal.ID, targetID: targetID, sender: act.ghost.UserID, key: key, eventID: resp.EventID, remoteID: reactionID})
}

// RemoteReactionRemove takes back a remote user's reaction.
func (b *Bridge) RemoteReactionRemove(ctx context.Context, portalID string, sender RemoteUser, targetID, key string) error {
	p, room, unlock, err := b.portalRoom(ctx, portalID)
	if err != nil {
		return err
	}
	defer unlock()
	ghostID := b.AS.Config.GhostID(sender.ID)
	r, err := b.findReaction(ctx, "", p.ID, targetID, ghostID, key)
	if err != nil || r == nil {
		return err
	}
	if _, err := b.AS.Intent(ghostID).RedactEvent(ctx, room, r.eventID); err != nil {
		return err
	}
	return b.deleteReaction(ctx, r)
}

// RemoteDelete redacts the event of a deleted remote message (as its
// sender's ghost, or the bot when the ghost may not).
func (b *Bridge) RemoteDelete(ctx context.Context, portalID string, sender RemoteUser, targetID string) error {
	p, room, unlock, err := b.portalRoom(ctx, portalID)
	if err != nil {
		return err
	}
	defer unlock()
	target, err := b.MessageByRemoteID(ctx, p.ID, targetID)
	if err != nil || target == nil {
		return err
	}
	redactor := b.AS.Intent(b.AS.Config.GhostID(sender.ID))
	if _, err := redactor.RedactEvent(ctx, room, target.EventID); err != nil {
		if !errors.Is(err, mautrix.MForbidden) {
			return err
		}
		if _, err := b.AS.Bot().RedactEvent(ctx, room, target.EventID); err != nil {
			return err
		}
	}
	return b.deleteMessage(ctx, target)
}

// SetPortalInfo brings the room's name and topic in line with the
// channel's (the bot sets them; only what changed is sent).
func (b *Bridge) SetPortalInfo(ctx context.Context, portalID string, sender *RemoteUser, name, topic string) error {
	p, room, unlock, err := b.portalRoom(ctx, portalID)
	if err != nil {
		return err
	}
	defer unlock()
	intent := b.AS.Bot()
	if sender != nil {
		g, err := b.joinedGhost(ctx, room, *sender)
		if err != nil {
			return err
		}
		intent = g.Intent
	}
	p.mu.RLock()
	oldName, oldTopic := p.name, p.topic
	p.mu.RUnlock()
	if name != "" && name != oldName {
		if _, err := b.sendState(ctx, intent, room, event.StateRoomName, &event.RoomNameEventContent{Name: name}); err != nil {
			return err
		}
	} else {
		name = oldName
	}
	if topic != oldTopic {
		if _, err := b.sendState(ctx, intent, room, event.StateTopic, &event.TopicEventContent{Topic: topic}); err != nil {
			return err
		}
	}
	if _, err := b.DB.Exec(ctx, `UPDATE bridge_portals SET name = $2, topic = $3 WHERE portal_id = $1`, p.ID, name, topic); err != nil {
		return err
	}
	p.mu.Lock()
	p.name, p.topic = name, topic
	p.mu.Unlock()
	return nil
}

// sendState sends a state event as intent, or as the bot when the ghost
// lacks the power to.
func (b *Bridge) sendState(ctx context.Context, intent *appservice.IntentAPI, room id.RoomID, t event.Type, content any) (*mautrix.RespSendEvent, error) {
	resp, err := intent.SendStateEvent(ctx, room, t, "", content)
	if errors.Is(err, mautrix.MForbidden) && intent.UserID != b.AS.Config.BotID() {
		resp, err = b.AS.Bot().SendStateEvent(ctx, room, t, "", content)
	}
	return resp, err
}
