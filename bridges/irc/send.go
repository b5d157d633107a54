package irc

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircfmt"
	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

// sendTimeout bounds a message's delivery, flood control included.
const sendTimeout = 2 * time.Minute

// SendMessage delivers a Matrix message from the sender's puppet (or the
// bot, relayed). IRC has no edits: the framework sends an edit here as
// "* new text", as IRC users write corrections. The remote ID is the
// IRCv3 msgid of the message's first line, which the server echoes back
// (echo-message), so that IRC replies and reactions to it find it; where
// the server gives none, a made-up local one (localMessageID).
func (c *core) SendMessage(ctx context.Context, msg *bridge.MatrixMessage) (string, error) {
	return c.send(ctx, msg)
}

// echoWait bounds the wait for the server's echo of a sent message (its
// msgid): the server echoes as it relays, so it comes at once or never
// (a refusal).
const echoWait = 3 * time.Second

func (c *core) send(ctx context.Context, msg *bridge.MatrixMessage) (string, error) {
	n, channel, dmNick, err := c.route(msg.Portal.ID)
	if err != nil {
		return "", err
	}
	if !n.isUp() {
		return "", n.errDown()
	}
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	target := channel
	if channel == "" {
		target = dmNick
	}
	var conn *ircx.Conn
	var p *puppet
	relayNick := "" // with draft/relaymsg: the relayed sender's nick
	if msg.Relayed {
		if channel == "" {
			return "", errors.New("direct chats are not relayed")
		}
		if _, ok := n.bot.MemberCount(channel); !ok {
			return "", fmt.Errorf("the bridge bot is not in %s", channel)
		}
		conn = n.bot
		if seps, ok := conn.CapValue("draft/relaymsg"); ok && msg.Unrelayed != nil {
			relayNick = relayMsgNick(msg.SenderName, seps, conn.ISupport().NickLen)
		}
	} else {
		p = n.puppet(msg.Sender.ID)
		if conn, err = p.ready(ctx, channel); err != nil {
			return "", err
		}
	}
	lines := c.ircLines(ctx, n, conn, msg, target, channel, relayNick)
	if len(lines) == 0 {
		return "", nil
	}
	if replyTo := ircMsgID(msg.ReplyTo); replyTo != "" && conn.HasCap("message-tags") {
		setTag(lines[0], "+draft/reply", replyTo)
	}
	var echo *answerWait
	if p != nil {
		p.sent(target, msg.Event.RoomID, msg.Event.ID)
		if conn.HasCap("echo-message") {
			echo = p.awaitEcho(conn, lines[0])
			defer p.dropAwait(echo)
		}
	}
	for _, line := range lines {
		if err := conn.Send(ctx, line); err != nil {
			if errors.Is(err, ircx.ErrNotConnected) {
				return "", fmt.Errorf("the connection to %s dropped: %s", n.cfg.Name, shortError(err))
			}
			return "", fmt.Errorf("not sent: %s", shortError(err))
		}
	}
	if p == nil || echo == nil {
		if p != nil {
			p.touch()
		}
		return localMessageID(), nil
	}
	p.touch()
	t := time.NewTimer(echoWait)
	defer t.Stop()
	select {
	case <-echo.done:
		if echo.msgID != "" {
			return echo.msgID, nil
		}
	case <-t.C:
	case <-ctx.Done():
	}
	return localMessageID(), nil
}

func setTag(m *irc.Message, key, value string) {
	if m.Tags == nil {
		m.Tags = irc.Tags{}
	}
	m.Tags[key] = irc.TagValue(value)
}

// awaitEcho waits for the server's echo of line (echo-message): by its
// label where the server has labeled-response, else as the first line of
// ours to the same target with the same text. The echo's msgid is left in
// the wait's msgID; a refusal (404 and the like) ends the wait too.
func (p *puppet) awaitEcho(conn *ircx.Conn, line *irc.Message) *answerWait {
	label := ""
	if conn.HasCap("labeled-response") {
		label = "sb" + strconv.FormatUint(rawLabels.Add(1), 36)
		setTag(line, "label", label)
	}
	var w *answerWait
	w = p.await(func(m *irc.Message) (bool, error) {
		switch m.Command {
		case "404", "401", "301":
			return p.n.equal(m.Param(1), line.Param(0)), nil
		case line.Command:
		default:
			return false, nil
		}
		if label != "" {
			if l, _ := m.Tags.GetTag("label"); l != label {
				return false, nil
			}
		} else if m.Prefix == nil || !p.n.equal(m.Prefix.Name, conn.Nick()) || !p.n.equal(m.Param(0), line.Param(0)) || m.Trailing() != line.Trailing() {
			return false, nil
		}
		w.msgID, _ = m.Tags.GetTag("msgid")
		return true, nil
	})
	return w
}

// ircLines renders a Matrix message as the IRC lines to send: formatting
// in mIRC codes, a reply as "nick: text", an edit as "* text", media as
// "name <link>", emotes as CTCP ACTION; every line fits the server's line
// length, and past max_lines the last line links to the whole message.
// With relayNick, a relayed message goes as RELAYMSG from that nick,
// without the relay format.
func (c *core) ircLines(ctx context.Context, n *network, conn *ircx.Conn, msg *bridge.MatrixMessage, target, channel, relayNick string) []*irc.Message {
	content := msg.Content
	if relayNick != "" {
		content = msg.Unrelayed
	}
	opts := ircfmt.Options{
		Pill:     func(u id.UserID, label string) string { return c.ircName(ctx, n, msg.Portal, channel, u, label) },
		RoomPill: func(a id.RoomAlias, label string) string { return c.channelOfAlias(n, a) },
	}
	var text string
	switch {
	case msg.Event.Type == event.EventSticker:
		text = c.mediaText(content, "", false)
	case content.MsgType == event.MsgImage || content.MsgType == event.MsgFile ||
		content.MsgType == event.MsgVideo || content.MsgType == event.MsgAudio:
		caption := ""
		if content.FileName != "" && content.Body != "" && content.Body != content.FileName {
			caption = ircfmt.FromMatrix(content, opts)
		}
		text = c.mediaText(content, caption, true)
	default:
		text = ircfmt.FromMatrix(content, opts)
	}
	if !msg.Relayed {
		if nick := c.replyNick(ctx, n, msg, channel); nick != "" {
			text = nick + ": " + text
		}
	}
	command, action := "PRIVMSG", false
	switch content.MsgType {
	case event.MsgNotice:
		command = "NOTICE"
	case event.MsgEmote:
		action = true
	}
	srcLen := conn.SourceLen()
	if relayNick != "" {
		command = "RELAYMSG" // relayed as a PRIVMSG (notices too)
		srcLen += len(relayNick) - len(conn.Nick())
	}
	if action {
		srcLen += len("\x01ACTION \x01")
	}
	parts := ircx.SplitMessage(srcLen, target, text, conn.ISupport().LineLen)
	if maxLines := n.cfg.MaxLines; len(parts) > maxLines {
		link := "(full message: " + matrixToEvent(msg.Event.RoomID, msg.Event.ID, c.cfg.ServerName) + ")"
		parts = append(parts[:maxLines-1], link)
	}
	lines := make([]*irc.Message, 0, len(parts))
	for _, part := range parts {
		if action {
			part = "\x01ACTION " + part + "\x01"
		}
		if relayNick != "" {
			lines = append(lines, &irc.Message{Command: command, Params: []string{target, relayNick, part}})
			continue
		}
		lines = append(lines, &irc.Message{Command: command, Params: []string{target, part}})
	}
	return lines
}

// relayMsgNick is the nick a relayed sender shows as with RELAYMSG: their
// name made a nick, then the server's first separator and "m" (Ergo
// requires a separator, so that the nick cannot be a real user's).
func relayMsgNick(name, separators string, nickLen int) string {
	sep := "/"
	if separators != "" {
		sep = separators[:1]
	}
	base := sanitizeNick(name)
	if base == "" {
		base = "matrix"
	}
	if nickLen > 0 && len(base)+len(sep)+1 > nickLen {
		base = truncateUTF8(base, max(nickLen-len(sep)-1, 1))
	}
	return base + sep + "m"
}

// matrixToEvent links to an event for people with a Matrix client.
func matrixToEvent(room id.RoomID, eventID id.EventID, via string) string {
	return "https://matrix.to/#/" + url.PathEscape(string(room)) + "/" + url.PathEscape(string(eventID)) + "?via=" + url.QueryEscape(via)
}

// mediaText is "name <link>" for a file (after its caption, when it has
// one), the link under media_url.
func (c *core) mediaText(content *event.MessageEventContent, caption string, useFileName bool) string {
	name := content.Body
	if useFileName && content.FileName != "" {
		name = content.FileName
	}
	if name == "" {
		name = "file"
	}
	uri := content.URL
	if content.File != nil {
		return name + " (an encrypted file, which the bridge cannot share)"
	}
	mxc, err := uri.Parse()
	if err != nil || mxc.IsEmpty() {
		return name
	}
	link := c.cfg.mediaBase() + "/" + url.PathEscape(mxc.Homeserver) + "/" + url.PathEscape(mxc.FileID) + "/" + url.PathEscape(name)
	text := name + " <" + link + ">"
	if caption != "" {
		text = caption + "\n" + text
	}
	return text
}

// replyNick is who a reply answers, as IRC knows them ("" when it is no
// reply, or a reply to oneself).
func (c *core) replyNick(ctx context.Context, n *network, msg *bridge.MatrixMessage, channel string) string {
	replyTo := msg.Event.Content.AsMessage().RelatesTo.GetNonFallbackReplyTo()
	if replyTo == "" {
		return ""
	}
	var sender id.UserID
	if msg.ReplyTo != nil {
		sender = msg.ReplyTo.Sender
	} else {
		evt, err := c.br.AS.Bot().GetEvent(ctx, msg.Event.RoomID, replyTo)
		if err != nil {
			return ""
		}
		sender = evt.Sender
	}
	if sender == msg.Event.Sender {
		return ""
	}
	return c.ircName(ctx, n, msg.Portal, channel, sender, "")
}

// ircName is how IRC users know a Matrix user: a ghost by its nick, a
// Matrix user by their puppet's nick, else by their display name.
func (c *core) ircName(ctx context.Context, n *network, p *bridge.Portal, channel string, userID id.UserID, label string) string {
	if userID == c.br.AS.Config.BotID() {
		return n.bot.Nick()
	}
	if folded, ok := n.nickOfGhost(userID); ok {
		if channel != "" {
			if mb, ok := n.bot.Member(channel, folded); ok {
				return mb.Nick
			}
		}
		if label != "" {
			return strings.TrimSuffix(label, n.cfg.DisplaynameSuffix)
		}
		return folded
	}
	if pup := n.existingPuppet(userID); pup != nil {
		if nick := pup.nick(); nick != "" {
			return nick
		}
	}
	if label != "" {
		return label
	}
	if m := c.br.AS.Bot().Member(ctx, p.RoomID(), userID); m != nil && m.Displayname != "" {
		return m.Displayname
	}
	return userID.Localpart()
}

// channelOfAlias writes a link to a portal's alias as its channel.
func (c *core) channelOfAlias(n *network, alias id.RoomAlias) string {
	localpart, server, _ := strings.Cut(strings.TrimPrefix(string(alias), "#"), ":")
	if server == c.cfg.ServerName {
		if rest, ok := strings.CutPrefix(localpart, c.cfg.AliasPrefix+n.cfg.ID+"_"); ok && n.validChannel(rest) {
			return rest
		}
	}
	return string(alias)
}
