package irc

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircfmt"
	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

// network is one IRC network: its bot connection and its puppets.
type network struct {
	c      *core
	cfg    *NetworkConfig
	log    zerolog.Logger
	addr   string
	dialer *ircx.Dialer
	bot    *ircx.Conn
	// caseMapping folds channel and nick names in IDs: the server's, as
	// last announced (kept in the database, so that IDs do not change
	// with a restart while the network is unreachable).
	caseMapping atomic.Uint32

	mu        sync.Mutex
	puppets   map[id.UserID]*puppet
	own       map[string]*puppet // the puppets by folded nick, for echo suppression
	reclaim   map[string]*puppet // the puppets wanting a nick back, by folded nick
	up        bool
	everUp    bool
	downAt    time.Time
	downWhy   string
	powerDue  map[string]bool        // channels with a power level sync scheduled
	questions map[string][]*question // WHOIS and NAMES asked by the bot, by question (events.go)
	// keys are the channels' keys (+k), by folded channel (keys.go);
	// joinRefused the channels whose room was told the bot cannot join.
	keys        map[string]storedKey
	joinRefused map[string]bool
	// dms are the direct chats, by the IRC user's folded nick: the Matrix
	// users who have one (dm.go).
	dms map[string]map[id.UserID]bool

	splits *splitDebouncer // netsplit quits in their grace period
	// restored: the puppets of the users in portal rooms were brought
	// back after the bridge started (once per run).
	restored atomic.Bool
}

func newNetwork(c *core, cfg *NetworkConfig) *network {
	n := &network{
		c:         c,
		cfg:       cfg,
		log:       c.log.With().Str("irc_network", cfg.ID).Logger(),
		addr:      net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		dialer:    ircx.NewDialer(cfg.ConnectionRate.PerSecond, cfg.ConnectionRate.Burst),
		puppets:   map[id.UserID]*puppet{},
		own:       map[string]*puppet{},
		reclaim:   map[string]*puppet{},
		powerDue:  map[string]bool{},
		questions: map[string][]*question{},

		keys:        map[string]storedKey{},
		joinRefused: map[string]bool{},
		dms:         map[string]map[id.UserID]bool{},
	}
	n.caseMapping.Store(uint32(ircx.RFC1459))
	n.splits = newSplitDebouncer(cfg.NetsplitGrace, time.Now, n.fold)
	botCfg := n.connConfig(cfg.BotNick, identOf(cfg.BotNick), "Switchboard IRC bridge", n.onBotEvent, nil)
	if cfg.SASL != nil { // the bot's account; puppets log in to none yet
		botCfg.SASL = &ircx.SASLPlain{Account: cfg.SASL.Account, Password: cfg.SASL.Password}
	}
	n.bot = ircx.New(botCfg)
	return n
}

// connConfig is an ircx config for a connection to the network.
func (n *network) connConfig(nick, ident, realname string, onEvent func(*ircx.Conn, *ircx.Event), onDisconnect func(*ircx.Conn, error)) ircx.Config {
	return ircx.Config{
		Addr:         n.addr,
		TLS:          n.cfg.TLS,
		TLSInsecure:  n.cfg.TLSInsecure,
		Password:     n.cfg.Password,
		Nick:         nick,
		Ident:        ident,
		Realname:     realname,
		SendRate:     n.cfg.RateLimit.LinesPerSecond,
		SendBurst:    n.cfg.RateLimit.Burst,
		Dialer:       n.dialer,
		BackoffMin:   n.cfg.Reconnect.Min,
		BackoffMax:   n.cfg.Reconnect.Max,
		OnEvent:      onEvent,
		OnDisconnect: onDisconnect,
		OnDial: func(conn *ircx.Conn, local, remote net.Addr) {
			n.c.idents.dialed(conn, ident, local, remote)
		},
	}
}

func identOf(nick string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(nick) {
		if (r >= 'a' && r <= 'z' || r >= '0' && r <= '9') && b.Len() < 10 {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "matrix"
	}
	return b.String()
}

func (n *network) start(ctx context.Context) error {
	var cm string
	if found, err := n.c.br.AS.GlobalKV().Get(ctx, n.kvKey("casemapping"), &cm); err != nil {
		return fmt.Errorf("network %s: %w", n.cfg.ID, err)
	} else if found {
		n.caseMapping.Store(uint32(parseCaseMapping(cm)))
	}
	if err := n.loadKeys(ctx); err != nil {
		return fmt.Errorf("network %s: channel keys: %w", n.cfg.ID, err)
	}
	if err := n.loadDMs(ctx); err != nil {
		return fmt.Errorf("network %s: direct chats: %w", n.cfg.ID, err)
	}
	n.c.wg.Add(3)
	go n.run()
	go n.reapIdle()
	go n.splitLoop()
	return nil
}

func (n *network) kvKey(name string) string { return "irc/" + n.cfg.ID + "/" + name }

func parseCaseMapping(s string) ircx.CaseMapping {
	for _, cm := range []ircx.CaseMapping{ircx.RFC1459, ircx.StrictRFC1459, ircx.ASCII} {
		if cm.String() == s {
			return cm
		}
	}
	return ircx.RFC1459
}

func (n *network) fold(name string) string {
	return ircx.CaseMapping(n.caseMapping.Load()).Fold(name)
}

func (n *network) equal(a, b string) bool {
	return ircx.CaseMapping(n.caseMapping.Load()).Equal(a, b)
}

func (n *network) portalID(channel string) string { return channelPortalID(n.cfg.ID, n.fold(channel)) }

// remoteUser is the ghost of an IRC user.
func (n *network) remoteUser(nick string) bridge.RemoteUser {
	return bridge.RemoteUser{ID: ghostSuffix(n.cfg.ID, n.fold(nick)), Name: nick + n.cfg.DisplaynameSuffix}
}

func (n *network) ghostID(nick string) id.UserID {
	return n.c.br.AS.Config.GhostID(ghostSuffix(n.cfg.ID, n.fold(nick)))
}

// ghostLocalpartPrefix starts the localparts of this network's ghosts.
func (n *network) ghostLocalpartPrefix() string {
	return n.c.br.AS.Config.GhostPrefix + id.EncodeUserLocalpart(n.cfg.ID+"_")
}

// nickOfGhost returns the folded nick of one of this network's ghosts.
func (n *network) nickOfGhost(userID id.UserID) (string, bool) {
	localpart, server, err := userID.Parse()
	if err != nil || server != n.c.br.AS.Config.ServerName {
		return "", false
	}
	rest, ok := strings.CutPrefix(localpart, n.c.br.AS.Config.GhostPrefix)
	if !ok {
		return "", false
	}
	decoded, err := id.DecodeUserLocalpart(rest)
	if err != nil {
		return "", false
	}
	return strings.CutPrefix(decoded, n.cfg.ID+"_")
}

// lane queues work on key's lane (a portal ID for a channel's events), in
// order, with a deadline; nothing runs after Stop.
func (n *network) lane(key string, f func(ctx context.Context)) {
	c := n.c
	c.lanes.do(key, func() {
		if c.ctx.Err() != nil {
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, 2*time.Minute)
		defer cancel()
		f(ctx)
	})
}

// ---- connection state ----

func (n *network) status() (up, everUp bool, why string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.up, n.everUp, n.downWhy
}

func (n *network) isUp() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.up
}

// errDown is a send's error while the network is unreachable.
func (n *network) errDown() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.everUp {
		return fmt.Errorf("the bridge is not connected to the IRC network %s yet (%s)", n.cfg.Name, orUnknown(n.downWhy))
	}
	return fmt.Errorf("the IRC network %s is unreachable since %s UTC (%s); the bridge is reconnecting",
		n.cfg.Name, n.downAt.UTC().Format("15:04:05"), orUnknown(n.downWhy))
}

func orUnknown(s string) string {
	if s == "" {
		return "connecting"
	}
	return s
}

// run keeps the bot connected, with backoff between attempts (paced with
// the puppets by the network's connection rate).
func (n *network) run() {
	defer n.c.wg.Done()
	ctx := n.c.ctx
	for {
		err := n.bot.Connect(ctx)
		if ctx.Err() != nil {
			return
		}
		metrics.connect(n, "bot", err)
		if err != nil {
			n.c.idents.forget(n.bot)
		}
		if err == nil {
			n.connected()
			select {
			case <-n.bot.Done():
			case <-ctx.Done():
				return
			}
			if ctx.Err() != nil {
				return
			}
			metrics.disconnect(n, "bot")
			n.c.idents.forget(n.bot)
			n.disconnected(n.bot.Err())
		} else {
			n.log.Warn().Err(err).Msg("Could not connect to the IRC network")
			n.mu.Lock()
			n.downWhy = shortError(err)
			n.mu.Unlock()
			n.c.updateState()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(n.bot.Backoff().Next()):
		}
	}
}

// shortError is an error as users read it, without ircx's prefixes.
func shortError(err error) string {
	s := err.Error()
	for _, p := range []string{"ircx: not connected: ", "ircx: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

func (n *network) connected() {
	if cm := n.bot.ISupport().CaseMapping; uint32(cm) != n.caseMapping.Load() {
		n.caseMapping.Store(uint32(cm))
		if err := n.c.br.AS.GlobalKV().Set(n.c.ctx, n.kvKey("casemapping"), cm.String()); err != nil {
			n.log.Warn().Err(err).Msg("Failed to save the network's case mapping")
		}
	}
	n.mu.Lock()
	back := n.everUp && !n.up
	n.up, n.everUp, n.downWhy = true, true, ""
	n.mu.Unlock()
	n.log.Info().Str("nick", n.bot.Nick()).Msg("Connected to the IRC network")
	n.c.updateState()
	first := !n.restored.Swap(true)
	n.c.bg(func(ctx context.Context) {
		n.joinChannels(ctx)
		if back {
			n.noticeAll(ctx, fmt.Sprintf("✅ The bridge is connected to the IRC network %s again.", n.cfg.Name))
		}
		n.applyMappings(ctx)
		if first {
			n.restorePuppets(ctx)
		}
	})
	n.reconnectPuppets()
}

// restorePuppets, at the bridge's first connection to the network, brings
// back the puppets of the Matrix users in its portal rooms (paced by the
// connection rate), so that a bridge restart does not make them vanish
// from IRC until they speak. Puppets then idle out as usual.
func (n *network) restorePuppets(ctx context.Context) {
	portals, err := n.portals(ctx)
	if err != nil {
		n.log.Warn().Err(err).Msg("Failed to list portals to restore puppets")
		return
	}
	wanted := 0
	for _, portal := range portals {
		_, channel, _, err := n.c.route(portal.ID)
		if err != nil || channel == "" || portal.RoomID() == "" {
			continue
		}
		members, err := n.c.br.AS.StateStore.GetRoomMembers(ctx, portal.RoomID(), event.MembershipJoin)
		if err != nil {
			n.log.Warn().Err(err).Str("portal", portal.ID).Msg("Failed to list a portal's members")
			continue
		}
		for userID := range members {
			if userID == n.c.br.AS.Config.BotID() || n.c.br.AS.Config.IsGhost(userID) {
				continue
			}
			if u, err := n.c.br.User(ctx, userID); err != nil || u.Permission < bridge.PermissionUser {
				continue
			}
			n.puppet(userID).want(channel)
			wanted++
		}
	}
	if wanted > 0 {
		n.log.Info().Int("puppets", wanted).Msg("Restoring the puppets of the users in portal rooms")
		n.reconnectPuppets()
	}
}

func (n *network) disconnected(err error) {
	why := "connection lost"
	if err != nil {
		why = shortError(err)
	}
	n.mu.Lock()
	wasUp := n.up
	n.up, n.downAt, n.downWhy = false, time.Now(), why
	n.mu.Unlock()
	n.log.Warn().Str("reason", why).Msg("Disconnected from the IRC network")
	n.c.updateState()
	if wasUp {
		n.c.bg(func(ctx context.Context) {
			n.noticeAll(ctx, fmt.Sprintf("⚠️ The bridge lost its connection to the IRC network %s (%s). "+
				"Messages are not delivered to IRC until it is back; it is reconnecting.", n.cfg.Name, why))
		})
	}
}

// portals lists the network's portals that have a room.
func (n *network) portals(ctx context.Context) ([]*bridge.Portal, error) {
	all, err := n.c.br.Portals(ctx)
	if err != nil {
		return nil, err
	}
	prefix := n.cfg.ID + "/"
	return slices.DeleteFunc(all, func(p *bridge.Portal) bool { return !strings.HasPrefix(p.ID, prefix) }), nil
}

// noticeAll tells every portal room of the network something, a few
// rooms at a time.
func (n *network) noticeAll(ctx context.Context, markdown string) {
	portals, err := n.portals(ctx)
	if err != nil {
		n.log.Warn().Err(err).Msg("Failed to list portals")
		return
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, p := range portals {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := n.c.br.Bot.Send(ctx, p.RoomID(), markdown); err != nil {
				n.log.Warn().Err(err).Stringer("room_id", p.RoomID()).Msg("Failed to send a notice")
			}
		}()
	}
	wg.Wait()
}

// joinChannels joins the bot to every bridged channel, the configured
// ones and the mapped ones, in as few JOIN lines as fit.
func (n *network) joinChannels(ctx context.Context) {
	seen := map[string]bool{}
	var channels []string
	add := func(ch string) {
		if key := n.fold(ch); !seen[key] {
			seen[key] = true
			channels = append(channels, ch)
		}
	}
	for _, ch := range n.cfg.Channels {
		add(ch)
	}
	for ch := range n.cfg.Mappings {
		add(ch)
	}
	portals, err := n.portals(ctx)
	if err != nil {
		n.log.Warn().Err(err).Msg("Failed to list portals")
	}
	for _, p := range portals {
		if _, ch, _, _, ok := parsePortalID(p.ID); ok && ch != "" {
			add(ch)
		}
	}
	if err := n.sendJoins(ctx, n.bot, channels); err != nil {
		n.log.Warn().Err(err).Msg("Failed to join the bridged channels")
	}
}

// applyMappings links the configured channel → room mappings that are
// not linked yet.
func (n *network) applyMappings(ctx context.Context) {
	for ch, m := range n.cfg.Mappings {
		room := m.Room
		p, err := n.c.br.Portal(ctx, n.portalID(ch))
		if err != nil {
			n.log.Warn().Err(err).Msg("Failed to load a mapped portal")
			continue
		}
		switch current := p.RoomID(); {
		case current == room:
		case current != "":
			n.log.Warn().Str("channel", ch).Stringer("mapped_room", room).Stringer("room_id", current).
				Msg("The mapped channel is bridged to another room; unlink it there first")
		default:
			if m.Key != "" && n.channelKey(ch) == "" { // forgotten when the room was unlinked
				if err := n.storeKey(ctx, ch, storedKey{Key: m.Key, Config: m.Key}); err != nil {
					n.log.Warn().Err(err).Str("channel", ch).Msg("Failed to store a mapped channel's key")
				}
			}
			if _, _, err := n.c.br.Link(ctx, room, p.ID, n.c.br.AS.Config.BotID()); err != nil {
				n.log.Warn().Err(err).Str("channel", ch).Stringer("room_id", room).Msg("Failed to link a mapped channel (invite the bridge bot to the room)")
			}
		}
	}
}

func (n *network) isConfigChannel(channel string) bool {
	return slices.ContainsFunc(n.cfg.Channels, func(ch string) bool { return n.equal(ch, channel) })
}

// ensureBotIn makes the bot join a channel, or, when it is in it already,
// brings the portal's members in line (after a JOIN, the end of NAMES
// does).
func (n *network) ensureBotIn(ctx context.Context, channel string) {
	if _, ok := n.bot.MemberCount(channel); ok {
		n.syncChannel(ctx, channel)
		return
	}
	if !n.bot.Connected() {
		return // joined when the bot connects
	}
	if err := n.bot.Send(ctx, n.joinLine(channel)); err != nil {
		n.log.Warn().Err(err).Str("channel", channel).Msg("Bot failed to join a channel")
	}
}

// leaveChannel: a portal was unlinked; the bot and the puppets part.
func (n *network) leaveChannel(ctx context.Context, channel string) {
	for _, p := range n.allPuppets() {
		p.part(ctx, channel, "Room unlinked")
	}
	if n.isConfigChannel(channel) {
		return
	}
	if _, ok := n.bot.MemberCount(channel); ok {
		if err := n.bot.Send(ctx, &irc.Message{Command: "PART", Params: []string{channel, "Room unlinked"}}); err != nil {
			n.log.Warn().Err(err).Str("channel", channel).Msg("Bot failed to part a channel")
		}
	}
}

// channelInfo describes a channel for its portal room.
func (n *network) channelInfo(channel string) *bridge.ChannelInfo {
	info := &bridge.ChannelInfo{ID: n.portalID(channel), Name: channel, Public: true}
	if st, ok := n.bot.Channel(channel); ok {
		info.Name, info.Topic = st.Name, ircfmt.Strip(st.Topic)
	}
	scheme := "irc"
	if n.cfg.TLS {
		scheme = "ircs"
	}
	info.ExternalURL = (&url.URL{Scheme: scheme, Host: n.addr, Path: "/" + channel}).String()
	if len(n.c.order) > 1 {
		info.Name += " (" + n.cfg.Name + ")"
	}
	return info
}

// validChannel checks a channel name against the server's CHANTYPES and
// CHANNELLEN (RFC 1459's when it announced none).
func (n *network) validChannel(channel string) bool {
	is := n.bot.ISupport()
	maxLen := is.ChannelLen
	if maxLen == 0 {
		maxLen = 200
	}
	return len(channel) >= 2 && len(channel) <= maxLen && is.IsChannel(channel) &&
		!strings.ContainsAny(channel, " ,\a\r\n\x00")
}

// ---- own connections ----

// puppet returns the Matrix user's puppet, creating it (unconnected).
func (n *network) puppet(userID id.UserID) *puppet {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.puppets[userID]
	if p == nil {
		p = newPuppet(n, userID)
		n.puppets[userID] = p
	}
	return p
}

func (n *network) existingPuppet(userID id.UserID) *puppet {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.puppets[userID]
}

func (n *network) allPuppets() []*puppet {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*puppet, 0, len(n.puppets))
	for _, p := range n.puppets {
		out = append(out, p)
	}
	return out
}

// ownNick records that a puppet uses nick (for echo suppression).
func (n *network) ownNick(p *puppet, nick string) {
	n.mu.Lock()
	n.own[n.fold(nick)] = p
	n.mu.Unlock()
}

// renameOwn follows a puppet's nick change; either connection seeing the
// NICK may call it, in any order.
func (n *network) renameOwn(p *puppet, from, to string) {
	n.mu.Lock()
	if n.own[n.fold(from)] == p {
		delete(n.own, n.fold(from))
	}
	n.own[n.fold(to)] = p
	n.mu.Unlock()
}

func (n *network) dropOwn(p *puppet, nick string) {
	n.mu.Lock()
	if n.own[n.fold(nick)] == p {
		delete(n.own, n.fold(nick))
	}
	n.mu.Unlock()
}

func (n *network) ownPuppet(nick string) *puppet {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.own[n.fold(nick)]
}

// isBridge reports whether nick is the bot or one of the puppets: what
// they do is the bridge's own and is not bridged back to Matrix.
func (n *network) isBridge(nick string) bool {
	return n.equal(nick, n.bot.Nick()) || n.ownPuppet(nick) != nil
}

// reconnectPuppets brings back the puppets that were in channels when the
// network went away, paced by the connection rate.
func (n *network) reconnectPuppets() {
	for _, p := range n.allPuppets() {
		if p.needsReconnect() {
			n.c.bg(func(ctx context.Context) { p.reconnect(ctx, true) })
		}
	}
}

// nickFreed: nick quit or changed away; a puppet waiting for it takes it.
func (n *network) nickFreed(nick string) {
	if i := strings.IndexByte(nick, '!'); i >= 0 { // MONITOR's nick!user@host
		nick = nick[:i]
	}
	n.mu.Lock()
	p := n.reclaim[n.fold(nick)]
	n.mu.Unlock()
	if p != nil {
		n.c.bg(p.reclaimNick)
	}
}

// reclaimNicks asks again, for every puppet, for the nick it was denied:
// the holder may have left where neither MONITOR nor the bot saw it.
func (n *network) reclaimNicks() {
	n.mu.Lock()
	waiting := make([]*puppet, 0, len(n.reclaim))
	for _, p := range n.reclaim {
		waiting = append(waiting, p)
	}
	n.mu.Unlock()
	for _, p := range waiting {
		n.c.bg(p.reclaimNick)
	}
}

// reapIdle quits the puppets that sent nothing for the idle timeout, and
// retries the nicks puppets wait for.
func (n *network) reapIdle() {
	defer n.c.wg.Done()
	tick := min(max(n.cfg.IdleTimeout/4, 50*time.Millisecond), time.Minute)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastReclaim := time.Now()
	for {
		select {
		case <-n.c.ctx.Done():
			return
		case <-t.C:
		}
		if every := time.Duration(n.c.reclaimEvery.Load()); time.Since(lastReclaim) >= every {
			lastReclaim = time.Now()
			n.reclaimNicks()
		}
		for _, p := range n.allPuppets() {
			if p.idleFor() >= n.cfg.IdleTimeout && p.connected() {
				n.c.bg(func(ctx context.Context) { p.reap(ctx) })
			}
		}
	}
}
