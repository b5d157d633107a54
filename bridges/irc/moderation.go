package irc

// Matrix → IRC moderation: a Matrix user's topic change, and their kick
// or ban of an IRC user's ghost, done on IRC by their puppet. IRC decides
// (the puppet needs channel operator status, or a channel without +t for
// topics); when it refuses, the room is told and shown the truth again
// (the IRC topic, the ghost back in the room).

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircfmt"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

// answerTimeout bounds the wait for the server's answer to a TOPIC, MODE
// or KICK.
const answerTimeout = 15 * time.Second

// answerWait waits for the server's answer to a command of the puppet's:
// match returns done when m answers it (err: a refusal).
type answerWait struct {
	msgID string // what an echo wait found (set before done)
	match func(m *irc.Message) (done bool, err error)
	done  chan error
}

// await registers a wait; call it before sending the command.
func (p *puppet) await(match func(m *irc.Message) (bool, error)) *answerWait {
	w := &answerWait{match: match, done: make(chan error, 1)}
	p.wmu.Lock()
	p.answers = append(p.answers, w)
	p.wmu.Unlock()
	return w
}

func (p *puppet) dropAwait(w *answerWait) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for i, x := range p.answers {
		if x == w {
			p.answers = append(p.answers[:i], p.answers[i+1:]...)
			return
		}
	}
}

// answer resolves the waits that m answers (on the reader).
func (p *puppet) answer(m *irc.Message) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if len(p.answers) == 0 {
		return
	}
	kept := p.answers[:0]
	for _, w := range p.answers {
		if done, err := w.match(m); done {
			w.done <- err
			continue
		}
		kept = append(kept, w)
	}
	clear(p.answers[len(kept):])
	p.answers = kept
}

// command sends a command from the puppet and waits for the answer.
func (p *puppet) command(ctx context.Context, msg *irc.Message, match func(m *irc.Message) (bool, error)) error {
	conn := p.conn.Load()
	if conn == nil || !conn.Connected() {
		return errNotConnected
	}
	w := p.await(match)
	defer p.dropAwait(w)
	if err := conn.Send(ctx, msg); err != nil {
		return errors.New(shortError(err))
	}
	t := time.NewTimer(answerTimeout)
	defer t.Stop()
	select {
	case err := <-w.done:
		return err
	case <-t.C:
		return errors.New("the IRC server did not answer")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refusal matches the error numerics a channel command may get: the
// server's text, with the numeric.
func refusal(m *irc.Message, channel string, fold func(string) string) (bool, error) {
	if len(m.Params) < 2 {
		return false, nil
	}
	switch m.Command {
	case "482", "442", "403", "477", "489", "484", "401", "441":
		// 441 and 401 name the nick, then the channel.
		for _, param := range m.Params[1:] {
			if fold(param) == fold(channel) {
				return true, fmt.Errorf("%s (%s)", strings.TrimSpace(m.Trailing()), m.Command)
			}
		}
	}
	return false, nil
}

// onMatrixEvent handles, besides the framework, what it does not pass to
// networks: topic changes, and kicks and bans of ghosts, by Matrix users.
// It runs on the appservice's worker: the work goes to the puppet's lane.
func (c *core) onMatrixEvent(ctx context.Context, evt *event.Event) {
	if evt.RoomID == "" || evt.Sender == c.br.AS.Config.BotID() || c.br.AS.Config.IsGhost(evt.Sender) {
		return
	}
	var target id.UserID
	switch evt.Type {
	case event.StateTopic:
	case event.StateMember:
		target = id.UserID(evt.GetStateKey())
		ms := evt.Content.AsMember().Membership
		if target == evt.Sender || !c.br.AS.Config.IsGhost(target) ||
			(ms != event.MembershipLeave && ms != event.MembershipBan && ms != event.MembershipInvite) {
			return
		}
	default:
		return
	}
	portal, err := c.br.PortalByRoom(ctx, evt.RoomID)
	if err != nil || portal == nil {
		return
	}
	n, channel, _, err := c.route(portal.ID)
	if err != nil || channel == "" {
		return
	}
	u, err := c.br.User(ctx, evt.Sender)
	if err != nil {
		n.log.Warn().Err(err).Msg("Failed to load a Matrix user")
		return
	}
	if evt.Type == event.StateTopic {
		topic := evt.Content.AsTopic().Topic
		n.lane("m/"+portal.ID, func(ctx context.Context) { n.matrixTopic(ctx, portal, u, channel, topic) })
		return
	}
	nick, ok := n.nickOfGhost(target)
	if !ok {
		return
	}
	ms := evt.Content.AsMember().Membership
	switch {
	case ms == event.MembershipInvite:
		n.lane("m/"+portal.ID, func(ctx context.Context) { n.matrixInvite(ctx, portal, u, channel, nick) })
	case ms == event.MembershipLeave && prevMembership(evt) == event.MembershipBan:
		n.lane("m/"+portal.ID, func(ctx context.Context) { n.matrixUnban(ctx, portal, u, channel, nick) })
	default:
		n.lane("m/"+portal.ID, func(ctx context.Context) {
			n.matrixKick(ctx, portal, u, channel, nick, target, ms == event.MembershipBan, evt.Content.AsMember().Reason)
		})
	}
}

// prevMembership is the membership a member event replaced ("" when
// unknown).
func prevMembership(evt *event.Event) event.Membership {
	prev := evt.Unsigned.PrevContent
	if prev == nil {
		return ""
	}
	if prev.Parsed == nil {
		if err := prev.ParseRaw(event.StateMember); err != nil {
			return ""
		}
	}
	if m, ok := prev.Parsed.(*event.MemberEventContent); ok {
		return m.Membership
	}
	return ""
}

// puppetCommand sends a channel command from a Matrix user's puppet and
// waits for the server to confirm it (done) or refuse it.
func (n *network) puppetCommand(ctx context.Context, u *bridge.User, channel string, msg *irc.Message, done func(m *irc.Message, p *puppet) bool) error {
	if u.Permission < bridge.PermissionUser {
		return errors.New("you have no IRC connection of your own on this bridge")
	}
	if !n.isUp() {
		return n.errDown()
	}
	p := n.puppet(u.ID)
	if _, err := p.ready(ctx, channel); err != nil {
		return err
	}
	return p.command(ctx, msg, func(m *irc.Message) (bool, error) {
		if done(m, p) {
			return true, nil
		}
		return refusal(m, channel, n.fold)
	})
}

// matrixInvite: a Matrix user invited an IRC user's ghost to a portal; the
// IRC user gets an INVITE to the channel (which an invite-only channel
// needs), from the user's puppet.
func (n *network) matrixInvite(ctx context.Context, portal *bridge.Portal, u *bridge.User, channel, foldedNick string) {
	if _, present := n.bot.Member(channel, foldedNick); present {
		return // already there: the ghost is joined
	}
	nick := n.currentNick(foldedNick)
	err := n.puppetCommand(ctx, u, channel, &irc.Message{Command: "INVITE", Params: []string{nick, channel}}, func(m *irc.Message, p *puppet) bool {
		return m.Command == "341" && n.equal(m.Param(1), nick) // RPL_INVITING
	})
	if err != nil {
		n.tell(ctx, portal.RoomID(), fmt.Sprintf("⚠️ %s: %s was not invited to %s on IRC: %s.", u.ID, nick, channel, err))
	}
}

// matrixUnban lifts on IRC the ban a Matrix user lifts on a ghost (the ban
// mask the bridge sets, nick!*@*).
func (n *network) matrixUnban(ctx context.Context, portal *bridge.Portal, u *bridge.User, channel, foldedNick string) {
	mask := n.currentNick(foldedNick) + "!*@*"
	err := n.puppetCommand(ctx, u, channel, &irc.Message{Command: "MODE", Params: []string{channel, "-b", mask}}, func(m *irc.Message, p *puppet) bool {
		return m.Command == "MODE" && m.Prefix != nil && n.equal(m.Prefix.Name, p.nick()) && n.equal(m.Param(0), channel) &&
			strings.Contains(strings.Join(m.Params[1:], " "), mask)
	})
	if err != nil {
		n.tell(ctx, portal.RoomID(), fmt.Sprintf("⚠️ %s: the ban of %s was not lifted on IRC: %s.", u.ID, mask, err))
	}
}

// matrixTopic sets a Matrix user's topic on IRC; when IRC refuses, the
// room is told and its topic set back to the channel's.
func (n *network) matrixTopic(ctx context.Context, portal *bridge.Portal, u *bridge.User, channel, topic string) {
	st, inChannel := n.bot.Channel(channel)
	if inChannel && ircfmt.Strip(st.Topic) == topic {
		return // the channel's already (an IRC change bridged, or a no-op)
	}
	var err error
	if u.Permission < bridge.PermissionUser {
		err = errors.New("you have no IRC connection of your own on this bridge")
	} else if !n.isUp() {
		err = n.errDown()
	} else {
		p := n.puppet(u.ID)
		if _, err = p.ready(ctx, channel); err == nil {
			err = p.command(ctx, &irc.Message{Command: "TOPIC", Params: []string{channel, topic}}, func(m *irc.Message) (bool, error) {
				if m.Command == "TOPIC" && m.Prefix != nil && n.equal(m.Prefix.Name, p.nick()) && n.equal(m.Param(0), channel) {
					return true, nil
				}
				return refusal(m, channel, n.fold)
			})
		}
	}
	if err == nil {
		return
	}
	n.log.Info().Err(err).Stringer("user", u.ID).Str("channel", channel).Msg("Topic change not made on IRC")
	room := portal.RoomID()
	n.tell(ctx, room, fmt.Sprintf("⚠️ %s: your topic change was not made on IRC: %s. The topic is set back to the channel's.", u.ID, err))
	old := ""
	if st, ok := n.bot.Channel(channel); ok {
		old = ircfmt.Strip(st.Topic)
	}
	if _, err := n.c.br.AS.Bot().SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: old}); err != nil {
		n.log.Warn().Err(err).Stringer("room_id", room).Msg("Failed to set the topic back")
	}
}

// matrixKick kicks (ban: bans nick!*@* and kicks) an IRC user whose ghost
// a Matrix user kicked; when IRC refuses, the room is told and the ghost
// comes back (unbanned), as the IRC user is still in the channel.
func (n *network) matrixKick(ctx context.Context, portal *bridge.Portal, u *bridge.User, channel, foldedNick string, ghost id.UserID, ban bool, reason string) {
	mb, present := n.bot.Member(channel, foldedNick)
	if !present {
		return // not in the channel (the ghost was left over, or they just left)
	}
	nick := mb.Nick
	if nick == "" {
		nick = foldedNick
	}
	what := "kick"
	if ban {
		what = "ban"
	}
	var err error
	if u.Permission < bridge.PermissionUser {
		err = errors.New("you have no IRC connection of your own on this bridge")
	} else if !n.isUp() {
		err = n.errDown()
	} else {
		p := n.puppet(u.ID)
		if _, err = p.ready(ctx, channel); err == nil && ban {
			mask := nick + "!*@*"
			err = p.command(ctx, &irc.Message{Command: "MODE", Params: []string{channel, "+b", mask}}, func(m *irc.Message) (bool, error) {
				if m.Command == "MODE" && m.Prefix != nil && n.equal(m.Prefix.Name, p.nick()) && n.equal(m.Param(0), channel) &&
					strings.Contains(strings.Join(m.Params[1:], " "), mask) {
					return true, nil
				}
				return refusal(m, channel, n.fold)
			})
		}
		if err == nil {
			if reason == "" {
				reason = "Kicked by " + string(u.ID)
			}
			err = p.command(ctx, &irc.Message{Command: "KICK", Params: []string{channel, nick, reason}}, func(m *irc.Message) (bool, error) {
				if m.Command == "KICK" && n.equal(m.Param(0), channel) && n.equal(m.Param(1), nick) {
					return true, nil
				}
				return refusal(m, channel, n.fold)
			})
		}
	}
	if err == nil {
		return
	}
	n.log.Info().Err(err).Stringer("user", u.ID).Str("channel", channel).Str("nick", nick).Msg("Kick not made on IRC")
	room := portal.RoomID()
	n.tell(ctx, room, fmt.Sprintf("⚠️ %s: your %s of %s was not made on IRC: %s. %s is still in %s, so their ghost is back.", u.ID, what, nick, err, nick, channel))
	if ban {
		if _, err := n.c.br.AS.Bot().UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: ghost, Reason: "The ban was not made on IRC"}); err != nil {
			n.log.Warn().Err(err).Stringer("room_id", room).Msg("Failed to unban a ghost whose ban IRC refused")
			return
		}
	}
	pid := portal.ID
	user := n.remoteUser(nick)
	n.lane(pid, func(ctx context.Context) {
		n.c.ghostReady(ctx, user)
		n.report(n.c.br.RemoteJoin(ctx, pid, user), "rejoin", channel)
	})
}

// tell sends the room a notice from the bot.
func (n *network) tell(ctx context.Context, room id.RoomID, markdown string) {
	if _, err := n.c.br.Bot.Send(ctx, room, markdown); err != nil {
		n.log.Warn().Err(err).Stringer("room_id", room).Msg("Failed to send a notice")
	}
}
