package irc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/framework/bot"
)

const (
	connectTimeout = time.Minute      // a puppet's connection for a message
	joinTimeout    = 15 * time.Second // the server's answer to JOIN
	refusalWindow  = 30 * time.Second // a 404 this soon after a send is about it
)

// puppet is a Matrix user's connection to one network, made when they
// first speak or join one of its portals and quit after the idle timeout.
type puppet struct {
	n      *network
	userID id.UserID

	mu        sync.Mutex // connecting, joining and quitting, one at a time
	conn      atomic.Pointer[ircx.Conn]
	connNick  string      // the nick conn was made for (mu)
	connSASL  bool        // conn logs in with SASL (mu)
	connCreds credentials // and these credentials (mu)
	wantNick  string      // the nick to reclaim, "" when it has it (n.mu)

	sasl        atomic.Int32 // saslTry, saslUnavailable or saslRefused
	credsWarned atomic.Bool  // told the user their password does not open

	reaped       atomic.Bool // quit for idleness: back with the next message
	reconnecting atomic.Bool
	lastActive   atomic.Int64 // unix ns

	// wmu guards what the connection's events touch too (they run on its
	// reader, which must never wait for mu: Connect holds it).
	wmu       sync.Mutex
	wanted    map[string]string // the channels to be in: folded → name
	joinWait  map[string][]chan error
	nickWait  []chan error
	lastSends map[string]sentMessage // by folded target: what a 404 refers to
	answers   []*answerWait          // commands waiting for the server's answer
	// refusedTold: the channels whose refused JOIN the user was told of,
	// until the puppet gets in (keys.go).
	refusedTold map[string]bool
}

type sentMessage struct {
	room  id.RoomID
	event id.EventID
	at    time.Time
}

func newPuppet(n *network, userID id.UserID) *puppet {
	// The maps other than wanted are made on first use: thousands of
	// idle puppets should cost little.
	return &puppet{n: n, userID: userID, wanted: map[string]string{}}
}

// laneKey orders a puppet's joins and parts.
func (p *puppet) laneKey() string { return "u/" + p.n.cfg.ID + "/" + string(p.userID) }

func (p *puppet) touch() { p.lastActive.Store(time.Now().UnixNano()) }

func (p *puppet) idleFor() time.Duration {
	return time.Since(time.Unix(0, p.lastActive.Load()))
}

func (p *puppet) connected() bool {
	c := p.conn.Load()
	return c != nil && c.Connected()
}

// nick is the puppet's nick now ("" when it is not connected).
func (p *puppet) nick() string {
	if c := p.conn.Load(); c != nil && c.Connected() {
		return c.Nick()
	}
	return ""
}

func (p *puppet) want(channel string) {
	p.wmu.Lock()
	p.wanted[p.n.fold(channel)] = channel
	p.wmu.Unlock()
}

func (p *puppet) unwant(channel string) {
	p.wmu.Lock()
	delete(p.wanted, p.n.fold(channel))
	p.wmu.Unlock()
}

func (p *puppet) wantedChannels() []string {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	out := make([]string, 0, len(p.wanted))
	for _, ch := range p.wanted {
		out = append(out, ch)
	}
	return out
}

func (p *puppet) needsReconnect() bool {
	return !p.reaped.Load() && !p.reconnecting.Load() && !p.connected() && len(p.wantedChannels()) > 0
}

// desiredNick is the nick the user chose (`!irc nick`), or the template's.
func (p *puppet) desiredNick(ctx context.Context) string {
	var nick string
	if found, err := p.n.c.br.AS.UserKV(p.userID).Get(ctx, p.n.kvKey("nick"), &nick); err == nil && found && nick != "" {
		return nick
	}
	br := p.n.c.br
	data := newUserData(p.userID, func() string {
		resp, err := br.AS.Bot().GetDisplayName(ctx, p.userID)
		if err != nil {
			return ""
		}
		return resp.DisplayName
	})
	return makeNick(p.n.cfg, data, p.n.bot.ISupport().NickLen)
}

// ready connects the puppet (when it is not), joins it to channel ("":
// none) and returns its connection, for a message to send.
func (p *puppet) ready(ctx context.Context, channel string) (*ircx.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := p.connectLocked(cctx); err != nil {
		return nil, err
	}
	if channel != "" {
		if err := p.joinLocked(ctx, channel); err != nil {
			return nil, err
		}
	}
	p.touch()
	return p.conn.Load(), nil
}

// joinChannel: the user joined a portal room; the puppet joins the
// channel (or will once the network is back).
func (p *puppet) joinChannel(ctx context.Context, channel string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Wanted first: should this connection fail, the next one (the
	// user's next message, the network's reconnect) joins it.
	p.want(channel)
	if !p.n.isUp() {
		return nil
	}
	// No connectTimeout here: a join waits its turn in the network's
	// connection rate however long the queue (thousands of users joining
	// at once); ircx bounds the dial and the registration themselves.
	if err := p.connectLocked(ctx); err != nil {
		// Retried with backoff in the background: the user is in the
		// room and should be in the channel.
		p.n.c.bg(func(ctx context.Context) { p.reconnect(ctx, false) })
		return err
	}
	p.touch()
	return p.joinLocked(ctx, channel)
}

// connectLocked connects the puppet unless it is connected; p.mu is held.
// With stored credentials it logs in with SASL PLAIN, or, where the
// network offers no SASL, with NickServ IDENTIFY once connected.
func (p *puppet) connectLocked(ctx context.Context) error {
	if p.connected() {
		return nil
	}
	n := p.n
	if !n.isUp() {
		return n.errDown()
	}
	nick := p.desiredNick(ctx)
	creds, err := n.credentials(ctx, p.userID)
	if err != nil {
		n.log.Warn().Err(err).Stringer("user", p.userID).Msg("Could not read the puppet's stored password")
		p.tellOnce(&p.credsWarned, fmt.Sprintf("Your stored password for %s could not be read (%v): connecting without it. Send `%sstorepass` again.",
			n.cfg.Name, err, n.c.br.Bot.CommandPrefix))
		creds = nil
	}
	useSASL := creds != nil && p.sasl.Load() == saslTry
	conn := p.conn.Load()
	if conn == nil || p.connNick != nick || p.connSASL != useSASL || (useSASL && p.connCreds != *creds) {
		conn = p.newConn(nick, creds, useSASL)
	}
	err = conn.Connect(ctx)
	var saslErr *ircx.SASLError
	switch {
	case err == nil:
	case useSASL && errors.Is(err, ircx.ErrSASLUnavailable):
		// Remembered until the bridge restarts or the user stores a new
		// password: NickServ it is on this network.
		p.sasl.Store(saslUnavailable)
		conn = p.newConn(nick, creds, false)
		err = conn.Connect(ctx)
	case useSASL && errors.As(err, &saslErr) && saslErr.Code != "906":
		p.sasl.Store(saslRefused)
		p.tell(fmt.Sprintf("%s refused your stored login for `%s` (%s): connecting without it. Check the password, then send `%sstorepass` again.",
			n.cfg.Name, creds.Account, saslErr.Message, n.c.br.Bot.CommandPrefix))
		creds = nil
		conn = p.newConn(nick, nil, false)
		err = conn.Connect(ctx)
	}
	metrics.connect(n, "puppet", err)
	if err != nil {
		n.c.idents.forget(conn)
		return fmt.Errorf("could not connect you to %s: %s", n.cfg.Name, shortError(err))
	}
	p.reaped.Store(false)
	got := conn.Nick()
	n.ownNick(p, got)
	p.touch()
	n.log.Debug().Stringer("user", p.userID).Str("nick", got).Str("account", conn.Account()).Msg("Puppet connected")
	if creds != nil && conn.Account() == "" {
		p.identify(ctx, conn, creds)
	}
	if channels := p.wantedChannels(); len(channels) > 0 {
		if err := n.sendJoins(ctx, conn, channels); err != nil {
			n.log.Warn().Err(err).Stringer("user", p.userID).Msg("Puppet failed to rejoin its channels")
		}
	}
	if n.equal(got, nick) {
		p.setWantNick("")
		return nil
	}
	p.setWantNick(nick)
	if conn.Account() != "" {
		// Atheme, Anope and others give a nick of your account back.
		_ = conn.Send(ctx, &irc.Message{Command: "PRIVMSG", Params: []string{n.cfg.NickServ, "REGAIN " + nick}})
	}
	if _, ok := conn.ISupport().Raw["MONITOR"]; ok {
		// The server says when the nick is free (731 RPL_MONOFFLINE).
		_ = conn.Send(ctx, &irc.Message{Command: "MONITOR", Params: []string{"+", nick}})
	}
	p.tell(fmt.Sprintf("On %s the nick `%s` is taken: you are `%s` until it is free, then you get it back. Send `%snick <nick>` to pick another.",
		n.cfg.Name, nick, got, n.c.br.Bot.CommandPrefix))
	return nil
}

// SASL states of a puppet with stored credentials.
const (
	saslTry         = iota // log in with SASL
	saslUnavailable        // the network offers none: NickServ IDENTIFY
	saslRefused            // the password was refused: none until storepass
)

// newConn makes the puppet's connection for nick (with SASL when useSASL).
func (p *puppet) newConn(nick string, creds *credentials, useSASL bool) *ircx.Conn {
	n := p.n
	cfg := n.connConfig(nick, makeIdent(n.cfg, newUserData(p.userID, nil)), string(p.userID), p.onEvent, p.onDisconnect)
	cfg.NoMembers = true // the bot keeps the member lists
	p.connCreds = credentials{}
	if useSASL {
		cfg.SASL = &ircx.SASLPlain{Account: creds.Account, Password: creds.Password}
		p.connCreds = *creds
	}
	conn := ircx.New(cfg)
	if old := p.conn.Load(); old != nil {
		n.c.idents.forget(old)
	}
	p.conn.Store(conn)
	p.connNick, p.connSASL = nick, useSASL
	return conn
}

// identify logs in with NickServ, for networks without SASL (or where it
// was refused and the user stored a new password since).
func (p *puppet) identify(ctx context.Context, conn *ircx.Conn, creds *credentials) {
	err := conn.Send(ctx, &irc.Message{Command: "PRIVMSG", Params: []string{p.n.cfg.NickServ, "IDENTIFY " + creds.Account + " " + creds.Password}})
	if err != nil {
		p.n.log.Debug().Err(err).Stringer("user", p.userID).Msg("Puppet could not identify to NickServ")
	}
}

// setWantNick records the nick the puppet should get back ("" when it has
// it): the bot's connection and a periodic retry try it when it is free.
func (p *puppet) setWantNick(nick string) {
	n := p.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if p.wantNick != "" && n.reclaim[n.fold(p.wantNick)] == p {
		delete(n.reclaim, n.fold(p.wantNick))
	}
	p.wantNick = nick
	if nick != "" {
		n.reclaim[n.fold(nick)] = p
	}
}

// reclaimNick asks for the wanted nick again (the server answers with a
// NICK, or a 433 that is ignored).
func (p *puppet) reclaimNick(ctx context.Context) {
	p.n.mu.Lock()
	want := p.wantNick
	p.n.mu.Unlock()
	conn := p.conn.Load()
	if want == "" || conn == nil || !conn.Connected() || p.n.equal(conn.Nick(), want) {
		return
	}
	_ = conn.Send(ctx, &irc.Message{Command: "NICK", Params: []string{want}})
}

// tell sends the user a notice in their management room.
func (p *puppet) tell(markdown string) {
	n := p.n
	n.c.bg(func(ctx context.Context) {
		if u, err := n.c.br.User(ctx, p.userID); err == nil {
			_ = n.c.br.Notify(ctx, u, markdown)
		}
	})
}

// tellOnce is tell, once until flag is cleared.
func (p *puppet) tellOnce(flag *atomic.Bool, markdown string) {
	if flag.CompareAndSwap(false, true) {
		p.tell(markdown)
	}
}

// joinLocked joins a channel and waits for the server's answer; p.mu is
// held and the puppet connected.
func (p *puppet) joinLocked(ctx context.Context, channel string) error {
	conn := p.conn.Load()
	p.want(channel)
	if _, ok := conn.MemberCount(channel); ok {
		return nil
	}
	key := p.n.fold(channel)
	wait := make(chan error, 1)
	p.wmu.Lock()
	if p.joinWait == nil {
		p.joinWait = map[string][]chan error{}
	}
	p.joinWait[key] = append(p.joinWait[key], wait)
	p.wmu.Unlock()
	defer p.dropJoinWaiter(key, wait)
	if _, ok := conn.MemberCount(channel); ok { // a rejoin in flight got there
		return nil
	}
	if err := conn.Send(ctx, p.n.joinLine(channel)); err != nil {
		return fmt.Errorf("could not join %s: %s", channel, shortError(err))
	}
	t := time.NewTimer(joinTimeout)
	defer t.Stop()
	select {
	case err := <-wait:
		if err != nil {
			p.unwant(channel)
			return fmt.Errorf("IRC did not let you join %s: %w", channel, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("IRC did not answer when you joined %s", channel)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *puppet) dropJoinWaiter(key string, wait chan error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	ws := p.joinWait[key]
	for i, w := range ws {
		if w == wait {
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(p.joinWait, key)
	} else {
		p.joinWait[key] = ws
	}
}

// joined resolves the waiters of a JOIN.
func (p *puppet) joined(channel string, err error) {
	key := p.n.fold(channel)
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for _, w := range p.joinWait[key] {
		select {
		case w <- err:
		default:
		}
	}
	delete(p.joinWait, key)
}

// part leaves a channel (the user left its room).
func (p *puppet) part(ctx context.Context, channel, reason string) {
	p.unwant(channel)
	conn := p.conn.Load()
	if conn == nil || !conn.Connected() {
		return
	}
	if _, ok := conn.MemberCount(channel); !ok {
		return
	}
	if err := conn.Send(ctx, &irc.Message{Command: "PART", Params: []string{channel, reason}}); err != nil {
		p.n.log.Debug().Err(err).Stringer("user", p.userID).Msg("Puppet failed to part")
	}
}

// quit disconnects the puppet for good (the bridge stops).
func (p *puppet) quit(ctx context.Context, message string) {
	p.reaped.Store(true)
	if conn := p.conn.Load(); conn != nil {
		_ = conn.Quit(ctx, message)
	}
}

// reap quits a puppet that was idle for the idle timeout; the user's next
// message connects it again.
func (p *puppet) reap(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.connected() || p.idleFor() < p.n.cfg.IdleTimeout {
		return
	}
	p.reaped.Store(true)
	p.wmu.Lock()
	clear(p.wanted)
	p.wmu.Unlock()
	p.n.log.Debug().Stringer("user", p.userID).Msg("Puppet idle: quitting")
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = p.conn.Load().Quit(qctx, "Idle; back when I speak on Matrix again")
}

// reconnect brings a dropped puppet back, with the connection's backoff
// (at once first when immediate), while the network is up.
func (p *puppet) reconnect(ctx context.Context, immediate bool) {
	for p.reconnecting.CompareAndSwap(false, true) {
		p.reconnectLoop(ctx, immediate)
		p.reconnecting.Store(false)
		// The network may have come back while the loop was giving up.
		if ctx.Err() != nil || !p.n.isUp() || !p.needsReconnect() {
			return
		}
		immediate = true
	}
}

func (p *puppet) reconnectLoop(ctx context.Context, immediate bool) {
	for attempt := 0; ; attempt++ {
		if attempt > 0 || !immediate {
			delay := p.n.cfg.Reconnect.Min
			if conn := p.conn.Load(); conn != nil {
				delay = conn.Backoff().Next()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
		if ctx.Err() != nil || p.reaped.Load() || len(p.wantedChannels()) == 0 || !p.n.isUp() {
			return // when the network is back, it reconnects the puppets
		}
		p.mu.Lock()
		err := p.connectLocked(ctx)
		p.mu.Unlock()
		if err == nil {
			return
		}
		p.n.log.Debug().Err(err).Stringer("user", p.userID).Msg("Puppet reconnection failed")
	}
}

// setNick changes the nick of a connected puppet and waits for the
// server's answer.
func (p *puppet) setNick(ctx context.Context, nick string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	conn := p.conn.Load()
	if conn == nil || !conn.Connected() {
		return errNotConnected
	}
	wait := make(chan error, 1)
	p.wmu.Lock()
	p.nickWait = append(p.nickWait, wait)
	p.wmu.Unlock()
	if err := conn.Send(ctx, &irc.Message{Command: "NICK", Params: []string{nick}}); err != nil {
		return err
	}
	t := time.NewTimer(joinTimeout)
	defer t.Stop()
	select {
	case err := <-wait:
		return err
	case <-t.C:
		return errors.New("the server did not answer")
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errNotConnected = errors.New("not connected")

func (p *puppet) nickAnswered(err error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	for _, w := range p.nickWait {
		w <- err
	}
	p.nickWait = nil
}

// sent remembers the last Matrix message sent to target, for the
// server's refusal (404, 401) that may follow.
func (p *puppet) sent(target string, room id.RoomID, eventID id.EventID) {
	p.wmu.Lock()
	if p.lastSends == nil {
		p.lastSends = map[string]sentMessage{}
	}
	p.lastSends[p.n.fold(target)] = sentMessage{room: room, event: eventID, at: time.Now()}
	p.wmu.Unlock()
}

// refused tells the user, in a reply to their message, that the server
// did not take it (a moderated channel, a nick that is gone).
func (p *puppet) refused(target, why string) {
	p.wmu.Lock()
	s, ok := p.lastSends[p.n.fold(target)]
	p.wmu.Unlock()
	if !ok || time.Since(s.at) > refusalWindow {
		return
	}
	br := p.n.c.br
	p.n.c.bg(func(ctx context.Context) {
		content := bot.Notice(fmt.Sprintf("⚠️ Not delivered to %s: the IRC server refused it (%s).", target, why))
		content.RelatesTo = &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: s.event}}
		if _, err := br.AS.Bot().SendMessageEvent(ctx, s.room, event.EventMessage, &content); err != nil {
			p.n.log.Warn().Err(err).Msg("Failed to report a refused message")
		}
	})
}

// onEvent handles what the puppet's own connection sees: its joins and
// their refusals, kicks, nick changes, refused messages, and private
// messages, which become direct chats. It runs on the reader.
func (p *puppet) onEvent(conn *ircx.Conn, ev *ircx.Event) {
	m := ev.Message
	var from string
	isUser := false
	if m.Prefix != nil {
		from = m.Prefix.Name
		isUser = m.Prefix.User != "" || m.Prefix.Host != ""
	}
	p.answer(m)
	switch m.Command {
	case "JOIN":
		if from != "" && p.n.equal(from, conn.Nick()) {
			for ch := range strings.SplitSeq(m.Param(0), ",") {
				p.joined(ch, nil)
				p.resetRefusal(ch)
			}
		}
	case "471", "473", "474", "475": // full, invite-only, banned, bad key
		p.joinRefused(m.Command, m.Param(1), m.Trailing())
		p.joined(m.Param(1), errors.New(m.Trailing()))
	case "403", "405", "476", "477", "489":
		p.joined(m.Param(1), errors.New(m.Trailing()))
	case "KICK":
		if p.n.equal(m.Param(1), conn.Nick()) {
			p.unwant(m.Param(0))
		}
	case "NICK":
		if to := m.Param(0); !p.n.equal(to, conn.Nick()) {
			// Someone sharing a channel with the puppet: their direct
			// chat with its user follows, before a private message from
			// the new nick that this connection reads next.
			p.n.dmNickChanged(from, to, p.userID)
		} else {
			p.n.renameOwn(p, from, to)
			p.nickAnswered(nil)
			p.n.mu.Lock()
			reclaimed := p.wantNick != "" && p.n.equal(p.wantNick, to)
			p.n.mu.Unlock()
			if reclaimed {
				p.setWantNick("")
				if _, ok := conn.ISupport().Raw["MONITOR"]; ok {
					go func() { _ = conn.Send(p.n.c.ctx, &irc.Message{Command: "MONITOR", Params: []string{"-", to}}) }()
				}
			}
		}
	case "731": // RPL_MONOFFLINE: a monitored nick (the one to reclaim) is free
		for _, target := range strings.Split(m.Param(1), ",") {
			p.n.nickFreed(target)
		}
	case "431", "432", "433", "436", "437", "484":
		p.nickAnswered(errors.New(m.Trailing()))
	case "404", "401":
		p.refused(m.Param(1), m.Trailing())
	case "PRIVMSG", "NOTICE":
		if isUser && p.n.equal(m.Param(0), conn.Nick()) && !p.n.isBridge(from) {
			p.n.directMessage(p, ev, from)
		}
	}
}

func (p *puppet) onDisconnect(conn *ircx.Conn, err error) {
	if p.conn.Load() != conn {
		return
	}
	p.n.dropOwn(p, conn.Nick())
	p.nickAnswered(errNotConnected)
	metrics.disconnect(p.n, "puppet")
	p.n.c.idents.forget(conn)
	n := p.n
	if n.c.ctx.Err() != nil || p.reaped.Load() || len(p.wantedChannels()) == 0 {
		return
	}
	n.log.Debug().Err(err).Stringer("user", p.userID).Msg("Puppet disconnected")
	if n.isUp() {
		n.c.bg(func(ctx context.Context) { p.reconnect(ctx, false) })
	}
}
