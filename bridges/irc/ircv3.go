package irc

// Reactions and redactions, where the server's IRCv3 support carries them:
// a reaction is a TAGMSG with the client tags +draft/react and
// +draft/reply (message-tags), a redaction a REDACT of the message's msgid
// (draft/message-redaction). Both need the msgid of the message, which the
// server gives with echo-message (our messages) or msgid (theirs). Where
// the server has none of these, a reaction becomes an action IRC users
// read, and a redaction stays on Matrix: IRC cannot take a line back.

import (
	"context"
	"errors"
	"strings"

	"go.mau.fi/util/random"
	"gopkg.in/irc.v3"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

var (
	_ bridge.ReactionSender  = (*core)(nil)
	_ bridge.RedactionSender = (*core)(nil)
)

// puppetFor is the connection of a Matrix user's puppet for a portal, in
// the channel, when the network is up.
func (c *core) puppetFor(ctx context.Context, portal *bridge.Portal, u *bridge.User) (conn *ircx.Conn, target string, err error) {
	n, channel, dmNick, err := c.route(portal.ID)
	if err != nil {
		return nil, "", err
	}
	if !n.isUp() {
		return nil, "", n.errDown()
	}
	target = channel
	if channel == "" {
		target = dmNick
	}
	conn, err = n.puppet(u.ID).ready(ctx, channel)
	return conn, target, err
}

// localIDPrefix starts the message IDs the bridge makes up for messages
// the server gave no msgid: they put every message in the message map (so
// that reactions to it are bridged, degraded) and are never sent to IRC.
const localIDPrefix = "~"

func localMessageID() string { return localIDPrefix + random.String(16) }

// ircMsgID is a message's IRCv3 msgid, "" for a made-up one.
func ircMsgID(m *bridge.Message) string {
	if m == nil || strings.HasPrefix(m.RemoteID, localIDPrefix) {
		return ""
	}
	return m.RemoteID
}

// reactionExcerpt bounds the quote of the message a degraded reaction
// names.
const reactionExcerpt = 60

// SendReaction sends a Matrix reaction as +draft/react on the message's
// msgid; where the server has no message tags or the message no msgid, as
// an action IRC users read: "* alice[m] reacted 👍 to bob: “the message”".
func (c *core) SendReaction(ctx context.Context, r *bridge.MatrixReaction) (string, error) {
	conn, target, err := c.puppetFor(ctx, r.Portal, r.Sender)
	if err != nil {
		return "", err
	}
	if msgID := ircMsgID(r.Target); msgID != "" && conn.HasCap("message-tags") {
		m := &irc.Message{Command: "TAGMSG", Params: []string{target}}
		setTag(m, "+draft/react", r.Key)
		setTag(m, "+draft/reply", msgID)
		return "", conn.Send(ctx, m)
	}
	n, channel, _, _ := c.route(r.Portal.ID)
	text := "reacted " + r.Key + " to " + c.ircName(ctx, n, r.Portal, channel, r.Target.Sender, "")
	if evt, err := c.br.AS.Bot().GetEvent(ctx, r.Target.RoomID, r.Target.EventID); err == nil {
		_ = evt.Content.ParseRaw(evt.Type)
		if body := strings.Join(strings.Fields(evt.Content.AsMessage().Body), " "); body != "" {
			if len(body) > reactionExcerpt {
				body = truncateUTF8(body, reactionExcerpt) + "…"
			}
			text += ": “" + body + "”"
		}
	}
	return "", conn.Send(ctx, &irc.Message{Command: "PRIVMSG", Params: []string{target, "\x01ACTION " + text + "\x01"}})
}

// RemoveReaction: IRCv3 has no way to take a reaction back (the IRC
// client keeps showing it); the Matrix side forgets it.
func (c *core) RemoveReaction(ctx context.Context, r *bridge.MatrixReaction) error { return nil }

// SendRedaction deletes a Matrix user's message on IRC with REDACT.
func (c *core) SendRedaction(ctx context.Context, portal *bridge.Portal, sender *bridge.User, login *bridge.Login, target *bridge.Message) error {
	msgID := ircMsgID(target)
	if msgID == "" || target.Sender != sender.ID {
		return nil // a message without msgid, or someone else's (a moderator's redaction), stays on IRC
	}
	conn, channel, err := c.puppetFor(ctx, portal, sender)
	if err != nil {
		return err
	}
	if !conn.HasCap("draft/message-redaction") {
		return nil
	}
	err = conn.Send(ctx, &irc.Message{Command: "REDACT", Params: []string{channel, msgID}})
	if errors.Is(err, ircx.ErrNotConnected) {
		return nil // nothing to take back from a connection that is gone
	}
	return err
}

// onTagMessage shows an IRC user's +draft/react as a Matrix reaction.
func (n *network) onTagMessage(ev *ircx.Event, from, target string) {
	m := ev.Message
	key, ok := m.Tags.GetTag("+draft/react")
	replyTo, ok2 := m.Tags.GetTag("+draft/reply")
	if !ok || !ok2 || key == "" || replyTo == "" {
		return // typing notifications and other tags
	}
	reactionID, _ := m.Tags.GetTag("msgid")
	sender := n.remoteUser(from)
	pid := n.portalID(target)
	n.lane(pid, func(ctx context.Context) {
		n.c.ghostReady(ctx, sender)
		err := n.c.br.RemoteReaction(ctx, pid, sender, replyTo, key, reactionID)
		if !ignorable(err) {
			n.report(err, "reaction", target)
		}
	})
}

// onRedact shows an IRC REDACT as a Matrix redaction.
func (n *network) onRedact(from, target, msgID string) {
	sender := n.remoteUser(from)
	pid := n.portalID(target)
	n.lane(pid, func(ctx context.Context) {
		err := n.c.br.RemoteDelete(ctx, pid, sender, msgID)
		if !ignorable(err) {
			n.report(err, "redaction", target)
		}
	})
}
