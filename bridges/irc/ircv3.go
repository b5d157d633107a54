package irc

// Reactions and redactions, where the server's IRCv3 support carries them:
// a reaction is a TAGMSG with the client tags +draft/react and
// +draft/reply (message-tags), a redaction a REDACT of the message's msgid
// (draft/message-redaction). Both need the msgid of the message, which the
// server gives with echo-message (our messages) or msgid (theirs). Where
// the server has none of these, reactions and redactions stay on Matrix:
// an IRC line per reaction would be noise, and IRC cannot take a line back.

import (
	"context"
	"errors"

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

// SendReaction sends a Matrix reaction as +draft/react.
func (c *core) SendReaction(ctx context.Context, r *bridge.MatrixReaction) (string, error) {
	if r.Target.RemoteID == "" {
		return "", nil
	}
	conn, target, err := c.puppetFor(ctx, r.Portal, r.Sender)
	if err != nil {
		return "", err
	}
	if !conn.HasCap("message-tags") {
		return "", nil
	}
	m := &irc.Message{Command: "TAGMSG", Params: []string{target}}
	setTag(m, "+draft/react", r.Key)
	setTag(m, "+draft/reply", r.Target.RemoteID)
	return "", conn.Send(ctx, m)
}

// RemoveReaction: IRCv3 has no way to take a reaction back (the IRC
// client keeps showing it); the Matrix side forgets it.
func (c *core) RemoveReaction(ctx context.Context, r *bridge.MatrixReaction) error { return nil }

// SendRedaction deletes a Matrix user's message on IRC with REDACT.
func (c *core) SendRedaction(ctx context.Context, portal *bridge.Portal, sender *bridge.User, login *bridge.Login, target *bridge.Message) error {
	if target.RemoteID == "" || target.Sender != sender.ID {
		return nil // someone else's message (a moderator's redaction) stays on IRC
	}
	conn, channel, err := c.puppetFor(ctx, portal, sender)
	if err != nil {
		return err
	}
	if !conn.HasCap("draft/message-redaction") {
		return nil
	}
	err = conn.Send(ctx, &irc.Message{Command: "REDACT", Params: []string{channel, target.RemoteID}})
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
