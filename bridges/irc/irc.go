// Package irc is Switchboard's IRC bridge, built on framework/bridge: IRC
// channels of one or more networks become Matrix rooms (portals), IRC users
// appear in them as ghosts (@irc_{network}_{nick}), and every Matrix user
// who takes part gets an IRC connection of their own (a puppet) with a nick
// made from a template.
//
// Per network, one bot connection (bridges/irc/ircx) joins the bridged
// channels and sees what happens in them: messages, joins, parts, quits,
// kicks, nick and topic changes and channel modes become Matrix events.
// Puppets connect when their user first speaks or joins a portal (paced by
// the network's connection rate), speak for them, and quit after an idle
// timeout; what they say is not bridged back, as it comes from the bridge.
//
//	br, err := irc.New(ctx, cfg, log)
//	return br.Run(ctx)
//
// Portal IDs are "{network}/{#channel}" with the channel case-folded by the
// network's case mapping; aliases are #{alias_prefix}{network}_{#channel}.
// docs/irc.md is the operator's guide.
package irc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/bridges/irc/ircfmt"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

// Bridge is a running IRC bridge.
type Bridge struct {
	Config *Config
	// Framework is the framework bridge the IRC side plugs into (its
	// appservice, bot, portals and database).
	Framework *bridge.Bridge

	core *core
}

// New validates the config and creates the bridge (its appservice and
// database tables). Nothing connects until Start or Run.
func New(ctx context.Context, cfg *Config, log zerolog.Logger) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c := newCore(cfg, log)
	br, err := bridge.New(ctx, &cfg.Config, c, log)
	if err != nil {
		return nil, err
	}
	c.br = br
	c.addCommands()
	c.addProvisioning()
	br.AS.OnEvent(c.onMatrixEvent)
	return &Bridge{Config: cfg, Framework: br, core: c}, nil
}

// Bind opens the appservice's listener ahead of Start (a port 0 in listen
// takes a free port and rewrites the registration), for `switchboard run`,
// which binds before the homeserver loads the registration.
func (b *Bridge) Bind() error {
	_, err := b.Framework.AS.Bind()
	return err
}

// Start connects to the IRC networks (in the background: a network that is
// down is retried with backoff) and starts the appservice.
func (b *Bridge) Start(ctx context.Context) error { return b.Framework.Start(ctx) }

// Stop stops receiving Matrix events, quits every IRC connection and closes
// the database.
func (b *Bridge) Stop() { b.Framework.Stop() }

// Run runs the bridge until ctx ends.
func (b *Bridge) Run(ctx context.Context) error { return b.Framework.Run(ctx) }

// core is the bridge.Network: every IRC network of the config.
type core struct {
	cfg      *Config
	log      zerolog.Logger
	br       *bridge.Bridge
	networks map[string]*network
	order    []*network
	lanes    *lanes
	ghosts   ghostLocks
	prov     *provisioner // matrix-appservice-irc's provisioning API (provision.go)
	// passwords seals the services passwords users store (storepass).
	passwords *passwordBox
	// idents are the connections' idents, and identd answers for them
	// (nil unless identd.enabled).
	idents *identTable
	identd *Identd
	// rejoinDelay is how long the bot waits to rejoin a channel it was
	// kicked from (ns; tests shorten it).
	rejoinDelay atomic.Int64
	// reclaimEvery is how often puppets ask again for a nick they were
	// denied (ns; tests shorten it).
	reclaimEvery atomic.Int64
	// identifyWait bounds the wait for services to confirm a storepass
	// login (ns; tests shorten it).
	identifyWait atomic.Int64

	ctx      context.Context // of everything the networks do; ends at Stop
	cancel   context.CancelFunc
	wg       sync.WaitGroup // connection loops, reapers, background work
	bgMu     sync.Mutex
	stopping bool // no new background work (bgMu)
}

func newCore(cfg *Config, log zerolog.Logger) *core {
	c := &core{cfg: cfg, log: log, networks: map[string]*network{}, lanes: newLanes(),
		passwords: &passwordBox{path: cfg.passwordKeyPath()}, idents: newIdentTable()}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.rejoinDelay.Store(int64(10 * time.Second))
	c.reclaimEvery.Store(int64(5 * time.Minute))
	c.identifyWait.Store(int64(10 * time.Second))
	for i := range cfg.Networks {
		n := newNetwork(c, &cfg.Networks[i])
		c.networks[n.cfg.ID] = n
		c.order = append(c.order, n)
	}
	return c
}

var (
	_ bridge.Network           = (*core)(nil)
	_ bridge.MembershipHandler = (*core)(nil)
	_ bridge.PortalHandler     = (*core)(nil)
	_ bridge.AliasResolver     = (*core)(nil)
)

func (c *core) Info() bridge.NetworkInfo {
	return bridge.NetworkInfo{ID: "irc", DisplayName: "IRC"}
}

// Start starts every network's connection loop; it does not wait for IRC.
func (c *core) Start(ctx context.Context, b *bridge.Bridge) error {
	c.br = b
	c.ctx = c.log.WithContext(c.ctx)
	b.SetState(bridge.StateConnecting, "")
	// The framework registers the bot in the background once the
	// appservice starts, and the IRC side may use the bot before that is
	// done (a mapped channel linked at connect): registering it here
	// first keeps the two from racing on mautrix's IntentAPI. A homeserver
	// that does not answer yet is left to the framework's retries.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := b.AS.Bot().EnsureRegistered(rctx); err != nil {
		c.log.Debug().Err(err).Msg("Bot not registered yet; the framework retries")
	}
	cancel()
	if c.cfg.Identd.Enabled {
		c.identd = NewIdentd(c.cfg.Identd.Listen, c.idents.lookup, c.log.With().Str("component", "identd").Logger())
		if err := c.identd.Start(); err != nil {
			c.cancel()
			return fmt.Errorf("identd: %w", err)
		}
	}
	for _, n := range c.order {
		if err := n.start(ctx); err != nil {
			c.cancel()
			if c.identd != nil {
				c.identd.Stop()
			}
			return err
		}
	}
	metrics.add(c)
	return nil
}

// Stop quits every connection (a few at a time, each within seconds) and
// waits for the work in progress: no Remote* call follows.
func (c *core) Stop() {
	c.bgMu.Lock()
	c.stopping = true
	c.bgMu.Unlock()
	c.cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	quit := func(f func(context.Context)) {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			f(ctx)
		}()
	}
	for _, n := range c.order {
		for _, p := range n.allPuppets() {
			quit(func(ctx context.Context) { p.quit(ctx, "Bridge shutting down") })
		}
		quit(func(ctx context.Context) { _ = n.bot.Quit(ctx, "Bridge shutting down") })
	}
	wg.Wait()
	c.wg.Wait()
	c.lanes.close()
	if c.identd != nil {
		c.identd.Stop()
	}
	metrics.remove(c)
}

// bg runs f in the background until Stop (which waits for it).
func (c *core) bg(f func(ctx context.Context)) {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.stopping {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f(c.ctx)
	}()
}

// route finds a portal's network and its channel (folded) or, for a
// direct chat, the IRC user's nick.
func (c *core) route(portalID string) (n *network, channel, dmNick string, err error) {
	netID, channel, nick, _, ok := parsePortalID(portalID)
	if ok {
		n = c.networks[netID]
	}
	if n == nil {
		return nil, "", "", fmt.Errorf("%s is not a portal of a configured IRC network", portalID)
	}
	return n, channel, nick, nil
}

// updateState sets the bridge state from the networks': CONNECTED when
// all are, else which are not and why.
func (c *core) updateState() {
	var down []string
	connecting := true
	for _, n := range c.order {
		up, everUp, reason := n.status()
		if up {
			continue
		}
		if everUp || reason != "" {
			connecting = false
		}
		if reason == "" {
			reason = "connecting"
		}
		down = append(down, n.cfg.Name+": "+reason)
	}
	switch {
	case len(down) == 0:
		names := make([]string, len(c.order))
		for i, n := range c.order {
			names[i] = n.cfg.Name
		}
		c.br.SetState(bridge.StateConnected, "connected to "+strings.Join(names, ", "))
	case connecting:
		c.br.SetState(bridge.StateConnecting, strings.Join(down, "; "))
	default:
		c.br.SetState(bridge.StateTransientDisconnect, strings.Join(down, "; "))
	}
}

// ResolveChannel accepts "network/#channel", "network #channel", or
// "#channel" when only one network is configured. The channel must start
// with one of the network's CHANTYPES and fit its CHANNELLEN.
func (c *core) ResolveChannel(ctx context.Context, channelID string) (*bridge.ChannelInfo, error) {
	netID, channel := splitChannelArg(channelID)
	if netID == "" && len(c.order) == 1 {
		netID = c.order[0].cfg.ID
	}
	n := c.networks[netID]
	if n == nil || !n.validChannel(channel) {
		return nil, bridge.ErrUnknownChannel
	}
	return n.channelInfo(channel), nil
}

// ChannelForAlias: "libera_#go" → "libera/#go".
func (c *core) ChannelForAlias(localpart string) (string, bool) {
	netID, channel, ok := strings.Cut(localpart, "_")
	if !ok || c.networks[netID] == nil || channel == "" {
		return "", false
	}
	return netID + "/" + channel, true
}

// AliasForChannel: "libera/#go" → "libera_#go".
func (c *core) AliasForChannel(channelID string) string {
	netID, channel, _ := strings.Cut(channelID, "/")
	return netID + "_" + channel
}

func (c *core) PortalLinked(ctx context.Context, p *bridge.Portal) error {
	n, channel, _, err := c.route(p.ID)
	if err != nil {
		return err
	}
	if channel == "" {
		return nil // a direct chat
	}
	n.lane(p.ID, func(ctx context.Context) { n.ensureBotIn(ctx, channel) })
	return nil
}

func (c *core) PortalUnlinked(ctx context.Context, p *bridge.Portal) {
	n, channel, _, err := c.route(p.ID)
	if err != nil || channel == "" {
		return
	}
	n.lane(p.ID, func(ctx context.Context) {
		n.leaveChannel(ctx, channel)
		n.forgetKey(ctx, channel)
	})
}

// MatrixMembership connects a Matrix user's puppet and joins it to the
// channel when they join its room, and parts it when they leave.
func (c *core) MatrixMembership(ctx context.Context, p *bridge.Portal, u *bridge.User, membership event.Membership) error {
	n, channel, _, err := c.route(p.ID)
	if err != nil || channel == "" || u.Permission < bridge.PermissionUser {
		return nil
	}
	switch membership {
	case event.MembershipJoin:
		pup := n.puppet(u.ID)
		n.lane(pup.laneKey(), func(ctx context.Context) {
			if err := pup.joinChannel(ctx, channel); err != nil {
				n.log.Info().Err(err).Stringer("user", u.ID).Str("channel", channel).Msg("Puppet did not join the channel of a room its user joined")
			}
		})
	case event.MembershipLeave, event.MembershipBan:
		if pup := n.existingPuppet(u.ID); pup != nil {
			n.lane(pup.laneKey(), func(ctx context.Context) { pup.part(ctx, channel, "Left the Matrix room") })
		}
	}
	return nil
}

// ircContent is the Matrix message of an IRC message's text.
func ircContent(text string, msgType event.MessageType) *event.MessageEventContent {
	body, html := ircfmt.ToMatrix(text)
	content := &event.MessageEventContent{MsgType: msgType, Body: body}
	if html != "" {
		content.Format, content.FormattedBody = event.FormatHTML, html
	}
	return content
}

// ignorable: errors of remote events that are expected (a channel
// without a room; the bridge stopping).
func ignorable(err error) bool {
	return err == nil || errors.Is(err, bridge.ErrNoRoom) || errors.Is(err, context.Canceled)
}

// ghostReady registers a ghost and sets its profile, once per name, under
// the ghost's lock (see ghostLocks).
func (c *core) ghostReady(ctx context.Context, u bridge.RemoteUser) {
	if name, ok := c.ghosts.ready.Load(u.ID); ok && name == u.Name {
		return
	}
	mu := c.ghosts.lock(u.ID)
	mu.Lock()
	defer mu.Unlock()
	if name, ok := c.ghosts.ready.Load(u.ID); ok && name == u.Name {
		return
	}
	if _, err := c.br.Ghost(ctx, u); err != nil {
		c.log.Warn().Err(err).Str("remote_user", u.ID).Msg("Failed to make a ghost ready")
		return
	}
	c.ghosts.ready.Store(u.ID, u.Name)
}

// ghostsReady makes a channel's ghosts ready, a few at a time.
func (c *core) ghostsReady(ctx context.Context, users []bridge.RemoteUser) {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, u := range users {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.ghostReady(ctx, u)
		}()
	}
	wg.Wait()
}
