package irc

// IRC → Matrix: what the bot's connection sees in the bridged channels
// (and what puppets receive privately) becomes Matrix events, each
// channel's in order on its lane.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircfmt"
	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

// onBotEvent hands what the bot sees to the lanes (it runs on the
// connection's reader: it must not block).
func (n *network) onBotEvent(conn *ircx.Conn, ev *ircx.Event) {
	m := ev.Message
	var from string
	isUser := false
	if m.Prefix != nil {
		from = m.Prefix.Name
		isUser = m.Prefix.User != "" || m.Prefix.Host != ""
	}
	self := from != "" && n.equal(from, conn.Nick())
	switch m.Command {
	case "JOIN":
		if self {
			for ch := range strings.SplitSeq(m.Param(0), ",") {
				n.resetBotRefusal(ch)
			}
		}
		if self || !isUser || n.isBridge(from) {
			return
		}
		for ch := range strings.SplitSeq(m.Param(0), ",") {
			if n.splits.rejoin(from, ch) {
				continue // back from a netsplit: the ghost never left
			}
			if n.lazy(ch) {
				continue // the ghost joins when they speak
			}
			user := n.remoteUser(from)
			n.lane(n.portalID(ch), func(ctx context.Context) {
				n.c.ghostReady(ctx, user)
				n.report(n.c.br.RemoteJoin(ctx, n.portalID(ch), user), "join", ch)
			})
		}
	case "366": // end of NAMES: the member list is known
		n.gatherReply(m) // or the end of a NAMES the provisioner asked
		ch := m.Param(1)
		n.lane(n.portalID(ch), func(ctx context.Context) { n.syncChannel(ctx, ch) })
	case "PART":
		if self || n.isBridge(from) {
			return
		}
		reason := "Left the channel"
		if r := m.Param(1); r != "" {
			reason = "Left the channel: " + r
		}
		for ch := range strings.SplitSeq(m.Param(0), ",") {
			n.leave(ch, from, reason)
		}
	case "QUIT":
		n.nickFreed(from)
		if n.isBridge(from) {
			return
		}
		if isNetsplitQuit(m.Param(0)) && len(ev.Channels) > 0 {
			n.onSplitQuit(from, ev.Channels)
			return
		}
		reason := "Quit"
		if r := m.Param(0); r != "" {
			reason = "Quit: " + r
		}
		for _, ch := range ev.Channels {
			n.leave(ch, from, reason)
		}
	case "KICK":
		n.onKick(conn, from, isUser && !n.isBridge(from), m.Param(0), m.Param(1), m.Param(2))
	case "NICK":
		n.onNick(conn, ev, from, m.Param(0))
	case "TOPIC":
		ch, topic := m.Param(0), ircfmt.Strip(m.Param(1))
		if n.ownPuppet(from) != nil {
			return // a Matrix user's topic change, already in the room
		}
		var by *bridge.RemoteUser
		if isUser && !n.isBridge(from) {
			u := n.remoteUser(from)
			by = &u
		}
		n.lane(n.portalID(ch), func(ctx context.Context) {
			if by != nil {
				n.c.ghostReady(ctx, *by)
			}
			n.report(n.c.br.SetPortalInfo(ctx, n.portalID(ch), by, "", topic), "topic", ch)
		})
	case "MODE":
		if ch := m.Param(0); conn.ISupport().IsChannel(ch) && len(m.Params) > 1 {
			if strings.ContainsAny(m.Params[1], conn.ISupport().PrefixModes) {
				n.schedulePowerSync(ch)
			}
			if strings.IndexByte(m.Params[1], 'k') >= 0 {
				n.keyChanged(conn, ch)
			}
		}
	case "471", "473", "474", "475": // the bot's JOIN refused: full, invite-only, banned, bad key
		n.botJoinRefused(m.Command, m.Param(1), m.Trailing())
	case "PRIVMSG", "NOTICE":
		target := m.Param(0)
		if m.Command == "PRIVMSG" && isUser && !n.isBridge(from) && n.equal(target, conn.Nick()) {
			n.privateToBot(from, m.Trailing())
			return
		}
		if !isUser || self || n.isBridge(from) || !conn.ISupport().IsChannel(target) {
			return // server notices, the bridge's own, messages to the bot, STATUSMSG
		}
		n.channelMessage(ev, from, target)
	case "AWAY": // away-notify: the ghost's presence follows
		if !isUser || n.isBridge(from) {
			return
		}
		n.awayChanged(from, m.Param(0))
	case "TAGMSG", "REDACT":
		target := m.Param(0)
		if !isUser || self || n.isBridge(from) || !conn.ISupport().IsChannel(target) {
			return
		}
		if m.Command == "TAGMSG" {
			n.onTagMessage(ev, from, target)
		} else if msgID := m.Param(1); msgID != "" {
			n.onRedact(from, target, msgID)
		}
	default:
		n.gatherReply(m)
	}
}

// privateToBot hands a private message to the bot to the provisioner: an
// operator's answer to a link request. One lane per sender keeps their
// answers in order and lets them hold no more than one line of the bot's
// send queue at a time.
func (n *network) privateToBot(from, text string) {
	n.lane("pm/"+pendingKey(n, from), func(ctx context.Context) { n.c.prov.onPrivateMessage(ctx, n, from, text) })
}

// leave shows an IRC user leaving a channel.
func (n *network) leave(channel, nick, reason string) {
	pid := n.portalID(channel)
	suffix := ghostSuffix(n.cfg.ID, n.fold(nick))
	n.lane(pid, func(ctx context.Context) {
		n.report(n.c.br.RemoteLeave(ctx, pid, suffix, reason), "leave", channel)
	})
}

// onKick shows a kick: of the bot (it rejoins), of a puppet (its Matrix
// user is kicked from the room, or the room told when the bridge may not),
// of an IRC user (their ghost is kicked by the actor's). Kicks by a server
// or by the bridge's own connections have no ghost to act: the target
// just leaves.
func (n *network) onKick(conn *ircx.Conn, actor string, actorHasGhost bool, channel, target, reason string) {
	pid := n.portalID(channel)
	by := n.remoteUser(actor)
	switch {
	case !actorHasGhost && !n.equal(target, conn.Nick()):
		if n.ownPuppet(target) == nil {
			n.leave(channel, target, fmt.Sprintf("Kicked by %s: %s", actor, reason))
		}
	case n.equal(target, conn.Nick()):
		n.lane(pid, func(ctx context.Context) {
			p, err := n.c.br.Portal(ctx, pid)
			if err != nil || p.RoomID() == "" {
				return
			}
			delay := time.Duration(n.c.rejoinDelay.Load())
			_, err = n.c.br.Bot.Send(ctx, p.RoomID(), fmt.Sprintf("⚠️ %s kicked the bridge from %s on IRC (%s): nothing is bridged until it is back. It rejoins in %s.", actor, channel, reason, delay))
			n.report(err, "notice", channel)
			time.AfterFunc(delay, func() {
				n.lane(pid, func(ctx context.Context) { n.ensureBotIn(ctx, channel) })
			})
		})
	case n.ownPuppet(target) != nil:
		p := n.ownPuppet(target)
		n.lane(pid, func(ctx context.Context) {
			n.c.ghostReady(ctx, by)
			err := n.c.br.RemoteKick(ctx, pid, by, p.userID, reason)
			if ignorable(err) {
				return
			}
			n.log.Info().Err(err).Stringer("user", p.userID).Msg("Could not kick a Matrix user whose puppet was kicked; telling the room")
			if portal, perr := n.c.br.Portal(ctx, pid); perr == nil && portal.RoomID() != "" {
				_, err := n.c.br.Bot.Send(ctx, portal.RoomID(), fmt.Sprintf("%s (%s on IRC) was kicked from %s by %s: %s", p.userID, target, channel, actor, reason))
				n.report(err, "notice", channel)
			}
		})
	default:
		targetID := n.ghostID(target)
		n.lane(pid, func(ctx context.Context) {
			n.c.ghostReady(ctx, by)
			n.report(n.c.br.RemoteKick(ctx, pid, by, targetID, reason), "kick", channel)
		})
	}
}

func (n *network) onNick(conn *ircx.Conn, ev *ircx.Event, from, to string) {
	if n.fold(from) != n.fold(to) {
		n.nickFreed(from)
	}
	if p := n.ownPuppet(from); p != nil {
		n.renameOwn(p, from, to)
		return
	}
	if n.ownPuppet(to) != nil {
		return // a puppet whose own connection saw the change first
	}
	if n.equal(to, conn.Nick()) {
		return // the bot
	}
	n.dmNickChanged(from, to, "")
	sameGhost := n.fold(from) == n.fold(to)
	for _, ch := range ev.Channels {
		pid := n.portalID(ch)
		oldSuffix, newUser := ghostSuffix(n.cfg.ID, n.fold(from)), n.remoteUser(to)
		mb, _ := conn.Member(ch, to)
		lazy := n.lazy(ch)
		n.lane(pid, func(ctx context.Context) {
			if lazy && !n.ghostInPortal(ctx, pid, from) {
				return // a ghost that never joined: the new nick joins when it speaks
			}
			if !sameGhost {
				err := n.c.br.RemoteLeave(ctx, pid, oldSuffix, "changed nick to "+to)
				if !ignorable(err) {
					n.report(err, "nick change", ch)
				}
			}
			n.c.ghostReady(ctx, newUser)
			n.report(n.c.br.RemoteJoin(ctx, pid, newUser), "nick change", ch)
		})
		if mb.Modes != "" {
			n.schedulePowerSync(ch)
		}
	}
}

func (n *network) channelMessage(ev *ircx.Event, from, target string) {
	m := ev.Message
	text := m.Trailing()
	msgType := event.MsgText
	if m.Command == "NOTICE" {
		msgType = event.MsgNotice
	}
	if ctcp, ok := strings.CutPrefix(text, "\x01"); ok {
		cmd, arg, _ := strings.Cut(strings.TrimSuffix(ctcp, "\x01"), " ")
		if cmd != "ACTION" {
			return // other CTCPs are not messages
		}
		text, msgType = arg, event.MsgEmote
	}
	content := ircContent(text, msgType)
	n.addMentions(content)
	msg := &bridge.RemoteMessage{PortalID: n.portalID(target), Sender: n.remoteUser(from), Content: content, ID: localMessageID()}
	if v, ok := m.Tags.GetTag("msgid"); ok && v != "" {
		msg.ID = v
	}
	if v, ok := m.Tags.GetTag("+draft/reply"); ok {
		msg.ReplyTo = v
	}
	if ev.ServerTime {
		msg.Timestamp = ev.Time
	}
	n.lane(msg.PortalID, func(ctx context.Context) {
		n.c.ghostReady(ctx, msg.Sender)
		_, err := n.c.br.RemoteMessage(ctx, msg)
		n.report(err, "message", target)
	})
}

// addMentions mentions (m.mentions) the Matrix users whose puppet nicks
// the text names, so that their clients notify them.
func (n *network) addMentions(content *event.MessageEventContent) {
	var users []id.UserID
	for _, word := range strings.FieldsFunc(content.Body, func(r rune) bool {
		return r >= 0x80 || !isNickChar(byte(r), false)
	}) {
		if p := n.ownPuppet(word); p != nil && !slices.Contains(users, p.userID) {
			users = append(users, p.userID)
		}
	}
	if len(users) > 0 {
		content.Mentions = &event.Mentions{UserIDs: users}
	}
}

// syncChannel brings a portal in line with the channel the bot is in:
// its ghosts, topic and power levels. A configured channel without a room
// gets one.
func (n *network) syncChannel(ctx context.Context, channel string) {
	st, ok := n.bot.Channel(channel)
	if !ok {
		return
	}
	pid := n.portalID(channel)
	p, err := n.c.br.Portal(ctx, pid)
	if err != nil {
		n.report(err, "sync", channel)
		return
	}
	if p.RoomID() == "" {
		if n.isConfigChannel(channel) {
			_, err := n.c.br.EnsureRoom(ctx, p, n.channelInfo(channel), bridge.RoomOptions{Alias: n.c.br.AliasFor(pid)})
			n.report(err, "create room", channel)
		}
		return
	}
	lazy := n.cfg.LazyMembersOver >= 0 && len(st.Members) > n.cfg.LazyMembersOver
	var inRoom map[id.UserID]bool
	if lazy {
		// Only the ghosts already in the room (who spoke) stay, and the
		// operators and voiced users join: SyncMembers removes the rest.
		joined, err := n.c.br.AS.StateStore.GetRoomJoinedOrInvitedMembers(ctx, p.RoomID())
		if err != nil {
			n.report(err, "member sync", channel)
			return
		}
		inRoom = make(map[id.UserID]bool, len(joined))
		for _, u := range joined {
			inRoom[u] = true
		}
	}
	members := make([]bridge.RemoteUser, 0, len(st.Members))
	for _, m := range st.Members {
		if n.isBridge(m.Nick) {
			continue
		}
		if lazy && m.Modes == "" && !inRoom[n.ghostID(m.Nick)] {
			continue
		}
		members = append(members, n.remoteUser(m.Nick))
	}
	n.c.ghostsReady(ctx, members)
	n.report(n.c.br.SyncMembers(ctx, pid, members), "member sync", channel)
	if st.Topic != "" {
		n.report(n.c.br.SetPortalInfo(ctx, pid, nil, "", ircfmt.Strip(st.Topic)), "topic", channel)
	}
	n.syncPower(ctx, channel)
}

// schedulePowerSync syncs a channel's power levels soon: mode changes
// that come together (a netjoin's +ooo, a mass voice) make one
// m.room.power_levels event.
func (n *network) schedulePowerSync(channel string) {
	key := n.fold(channel)
	n.mu.Lock()
	if n.powerDue[key] {
		n.mu.Unlock()
		return
	}
	n.powerDue[key] = true
	n.mu.Unlock()
	time.AfterFunc(250*time.Millisecond, func() {
		n.mu.Lock()
		delete(n.powerDue, key)
		n.mu.Unlock()
		n.lane(n.portalID(channel), func(ctx context.Context) { n.syncPower(ctx, channel) })
	})
}

// powerFor maps IRC prefix modes to a power level: operator (and above)
// 50, halfop 25, voice 1.
func powerFor(is *ircx.ISupport, modes string) int {
	level := 0
	opRank := strings.IndexByte(is.PrefixModes, 'o')
	for i := 0; i < len(modes); i++ {
		rank := strings.IndexByte(is.PrefixModes, modes[i])
		switch {
		case rank >= 0 && opRank >= 0 && rank <= opRank:
			level = max(level, 50)
		case modes[i] == 'h':
			level = max(level, 25)
		case modes[i] == 'v':
			level = max(level, 1)
		}
	}
	return level
}

// syncPower sets the power levels of the channel's ghosts from their
// prefix modes, in one event, as the bot; Matrix users' levels are left
// alone.
func (n *network) syncPower(ctx context.Context, channel string) {
	st, ok := n.bot.Channel(channel)
	if !ok {
		return
	}
	p, err := n.c.br.Portal(ctx, n.portalID(channel))
	if err != nil || p.RoomID() == "" {
		return
	}
	room := p.RoomID()
	is := n.bot.ISupport()
	want := map[id.UserID]int{}
	for _, m := range st.Members {
		if level := powerFor(is, m.Modes); level > 0 && !n.isBridge(m.Nick) {
			want[n.ghostID(m.Nick)] = level
		}
	}
	bot := n.c.br.AS.Bot()
	current, err := bot.PowerLevels(ctx, room)
	if err != nil {
		n.report(err, "power levels", channel)
		return
	}
	if current.GetUserLevel(bot.UserID) < current.GetEventLevel(event.StatePowerLevels) {
		// A linked room whose moderators did not give the bot the power:
		// the ghosts keep the default level.
		n.log.Debug().Stringer("room_id", room).Msg("Bot may not set power levels: IRC operators stay at the default level")
		return
	}
	pl := current.Clone()
	if pl.Users == nil {
		pl.Users = map[id.UserID]int{}
	}
	prefix := "@" + n.ghostLocalpartPrefix()
	changed := false
	for u := range pl.Users {
		if strings.HasPrefix(string(u), prefix) && u.Homeserver() == n.c.br.AS.Config.ServerName && want[u] == 0 {
			delete(pl.Users, u)
			changed = true
		}
	}
	for u, level := range want {
		if old, ok := pl.Users[u]; !ok || old != level {
			pl.Users[u] = level
			changed = true
		}
	}
	if !changed {
		return
	}
	if _, err := bot.SetPowerLevels(ctx, room, pl); err != nil {
		n.log.Warn().Err(err).Stringer("room_id", room).Msg("Bot could not set the power levels of IRC operators (does it have the power?)")
	}
}

// report logs what failed of bridging an IRC event.
func (n *network) report(err error, what, channel string) {
	if ignorable(err) {
		return
	}
	n.log.Warn().Err(err).Str("what", what).Str("channel", channel).Msg("Failed to bridge an IRC event")
}

var (
	_ bridge.DirectChatStarter = (*core)(nil)
	_ bridge.GhostResolver     = (*core)(nil)
)

// ResolveGhost: any valid nick on a configured network has a ghost, so
// that Matrix users can invite or message IRC users the bridge has not
// seen yet.
func (c *core) ResolveGhost(ctx context.Context, ghost id.UserID) (bridge.RemoteUser, error) {
	n, folded, err := c.ghostNick(ghost)
	if err != nil {
		return bridge.RemoteUser{}, err
	}
	return n.remoteUser(n.currentNick(folded)), nil
}

func (c *core) ghostNick(ghost id.UserID) (*network, string, error) {
	for _, n := range c.order {
		if folded, ok := n.nickOfGhost(ghost); ok && validNick(folded, 0) {
			return n, folded, nil
		}
	}
	return nil, "", bridge.ErrUnknownChannel
}

// DirectChat: a Matrix user invited an IRC user's ghost to a direct chat;
// it becomes the chat their private messages go to, as if the IRC user
// had written first.
func (c *core) DirectChat(ctx context.Context, user *bridge.User, ghost id.UserID) (string, bridge.RemoteUser, error) {
	n, folded, err := c.ghostNick(ghost)
	if err != nil {
		return "", bridge.RemoteUser{}, err
	}
	n.addDM(folded, user.ID)
	return dmPortalID(n.cfg.ID, folded, user.ID), n.remoteUser(n.currentNick(folded)), nil
}

// awayChanged sets the presence of an IRC user's ghost as they mark
// themselves away (unavailable, with the away message as the status) or
// back (online). Ghosts not made yet are left alone.
func (n *network) awayChanged(nick, message string) {
	user := n.remoteUser(nick)
	if _, made := n.c.ghosts.ready.Load(user.ID); !made {
		return
	}
	presence := mautrix.ReqPresence{Presence: event.PresenceOnline}
	if message != "" {
		presence = mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: message}
	}
	n.lane("away/"+user.ID, func(ctx context.Context) {
		if err := n.c.br.AS.Intent(n.ghostID(nick)).SetPresence(ctx, presence); err != nil {
			n.log.Debug().Err(err).Str("nick", nick).Msg("Failed to set a ghost's presence")
		}
	})
}

// lazy reports whether channel's member list syncs lazily
// (lazy_members_over).
func (n *network) lazy(channel string) bool {
	count, _ := n.bot.MemberCount(channel)
	return n.cfg.LazyMembersOver >= 0 && count > n.cfg.LazyMembersOver
}

// ghostInPortal reports whether nick's ghost is in the portal's room.
func (n *network) ghostInPortal(ctx context.Context, portalID, nick string) bool {
	p, err := n.c.br.Portal(ctx, portalID)
	if err != nil || p.RoomID() == "" {
		return false
	}
	return n.c.br.AS.StateStore.IsInRoom(ctx, p.RoomID(), n.ghostID(nick))
}

// currentNick is a folded nick as the user writes it, when the bot shares
// a channel with them.
func (n *network) currentNick(folded string) string {
	for _, ch := range n.bot.Channels() {
		if mb, ok := n.bot.Member(ch, folded); ok && mb.Nick != "" {
			return mb.Nick
		}
	}
	return folded
}

// directMessage bridges a private message to a puppet into the direct
// chat of the IRC user and the puppet's Matrix user, created by the IRC
// user's ghost on the first PRIVMSG (a NOTICE alone, from services or
// bots, creates none).
func (n *network) directMessage(p *puppet, ev *ircx.Event, from string) {
	m := ev.Message
	text, msgType := m.Trailing(), event.MsgText
	notice := m.Command == "NOTICE"
	if notice {
		msgType = event.MsgNotice
	}
	if ctcp, ok := strings.CutPrefix(text, "\x01"); ok {
		cmd, arg, _ := strings.Cut(strings.TrimSuffix(ctcp, "\x01"), " ")
		if cmd != "ACTION" {
			return
		}
		text, msgType = arg, event.MsgEmote
	}
	pid := dmPortalID(n.cfg.ID, n.fold(from), p.userID)
	user := n.remoteUser(from)
	msg := &bridge.RemoteMessage{PortalID: pid, Sender: user, Content: ircContent(text, msgType)}
	if v, ok := m.Tags.GetTag("msgid"); ok {
		msg.ID = v
	}
	if ev.ServerTime {
		msg.Timestamp = ev.Time
	}
	// On the user's direct chat lane: after the moves of the nick
	// changes read before it (dm.go).
	n.lane(n.dmLane(p.userID), func(ctx context.Context) {
		portal, err := n.c.br.Portal(ctx, pid)
		if err != nil {
			n.report(err, "direct message", from)
			return
		}
		n.c.ghostReady(ctx, user)
		if portal.RoomID() == "" {
			if notice {
				return
			}
			ghost, err := n.c.br.Ghost(ctx, user)
			if err == nil {
				_, err = n.c.br.EnsureRoom(ctx, portal, &bridge.ChannelInfo{ID: pid}, bridge.RoomOptions{Invite: []id.UserID{p.userID}, DirectWith: ghost})
			}
			if err != nil {
				n.report(err, "direct chat", from)
				return
			}
			n.addDM(n.fold(from), p.userID)
		}
		_, err = n.c.br.RemoteMessage(ctx, msg)
		n.report(err, "direct message", from)
	})
}

// ---- questions to the server ----

// question is one the bot asked the server (WHOIS, NAMES), the reply
// being the numerics that answer it, gathered until the
// one that ends it (replyKey). n.questions holds them by question.
type question struct {
	reply []*irc.Message
	err   error
	done  chan struct{}
}

// ask sends a question through the bot and returns the numerics of the
// server's reply. Asking what is being asked already waits for that
// reply instead: two replies to one question cannot be told apart.
func (n *network) ask(ctx context.Context, q *irc.Message) ([]*irc.Message, error) {
	if !n.bot.Connected() {
		return nil, n.errDown()
	}
	key := q.Command + " " + n.fold(q.Param(0))
	req := &question{done: make(chan struct{})}
	n.mu.Lock()
	asked := n.questions[key]
	if len(asked) > 0 {
		req.reply = slices.Clone(asked[0].reply)
	}
	n.questions[key] = append(asked, req)
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.questions[key] = slices.DeleteFunc(n.questions[key], func(r *question) bool { return r == req })
		if len(n.questions[key]) == 0 {
			delete(n.questions, key)
		}
		n.mu.Unlock()
	}()
	if len(asked) == 0 {
		if err := n.bot.Send(ctx, q); err != nil {
			n.mu.Lock()
			n.answered(key, err)
			n.mu.Unlock()
			return nil, err
		}
	}
	select {
	case <-req.done:
		return req.reply, req.err
	case <-ctx.Done():
		return nil, errors.New("the server did not answer in time")
	}
}

// replyKey names the question a numeric answers (as ask's key), and
// whether it ends the reply.
func (n *network) replyKey(m *irc.Message) (key string, end bool) {
	if len(m.Command) != 3 || len(m.Params) < 2 {
		return "", false
	}
	switch m.Command {
	case "353": // RPL_NAMREPLY: me [=*@] #chan :names
		return "NAMES " + n.fold(m.Params[len(m.Params)-2]), false
	case "366": // RPL_ENDOFNAMES: me #chan :End of NAMES list
		return "NAMES " + n.fold(m.Params[1]), true
	case "318", "401", "406": // RPL_ENDOFWHOIS, ERR_NOSUCHNICK, ERR_WASNOSUCHNICK
		return "WHOIS " + n.fold(m.Params[1]), true
	}
	return "WHOIS " + n.fold(m.Params[1]), false
}

// gatherReply hands a numeric to the questions waiting for it.
func (n *network) gatherReply(m *irc.Message) {
	key, end := n.replyKey(m)
	if key == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range n.questions[key] {
		r.reply = append(r.reply, m)
	}
	if end {
		n.answered(key, nil)
	}
}

// answered ends the wait of key's questions. Called with n.mu held.
func (n *network) answered(key string, err error) {
	for _, r := range n.questions[key] {
		r.err = err
		close(r.done)
	}
	delete(n.questions, key)
}

// whoisUser asks the server about a nick through the bot.
func (n *network) whoisUser(ctx context.Context, nick string) ([]string, error) {
	reply, err := n.ask(ctx, &irc.Message{Command: "WHOIS", Params: []string{nick}})
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, m := range reply {
		var line string
		switch m.Command {
		case "311": // nick user host * :realname
			line = fmt.Sprintf("%s is %s!%s@%s (%s)", m.Param(1), m.Param(1), m.Param(2), m.Param(3), m.Trailing())
		case "312": // nick server :info
			line = fmt.Sprintf("on server %s (%s)", m.Param(2), m.Trailing())
		case "317": // nick idle signon :…
			if idle, err := strconv.Atoi(m.Param(2)); err == nil {
				line = fmt.Sprintf("idle for %s", time.Duration(idle)*time.Second)
			}
			if signon, err := strconv.ParseInt(m.Param(3), 10, 64); err == nil && len(m.Params) > 4 {
				line += fmt.Sprintf(", connected since %s UTC", time.Unix(signon, 0).UTC().Format("2006-01-02 15:04"))
			}
		case "319": // nick :channels
			line = "in " + m.Trailing()
		case "330": // nick account :is logged in as
			line = "logged in as " + m.Param(2)
		case "301": // nick :away message
			line = "away: " + m.Trailing()
		case "318":
		case "401", "406":
			return nil, fmt.Errorf("no such nick: %s", m.Param(1))
		default:
			if m.Command[0] == '3' && len(m.Params) >= 3 {
				line = m.Trailing()
			}
		}
		if line != "" {
			lines = append(lines, line)
		}
	}
	return lines, nil
}
