// Package bridge is the framework's API for bridges: a bridge implements
// Network (the remote side) and gets, on top of the appservice runtime
// (package framework):
//
//   - portals: a remote channel and its Matrix room, created on demand (a
//     user joins #{alias_prefix}channel, or the network asks for a direct
//     chat) or linked to an existing room by a user with enough power;
//   - ghosts: remote users shown as Matrix users, registered, profiled and
//     joined on demand;
//   - users: Matrix users of the bridge with their permission, management
//     room and optional remote logins (puppeting);
//   - relay mode: in a portal that relays, a Matrix user without a login is
//     sent by the bridge's own remote account as "name: text";
//   - the message map (Matrix event ↔ remote message) for replies, edits,
//     reactions and redactions both ways;
//   - membership helpers (RemoteJoin, RemoteLeave, SyncMembers), m.bridge
//     and MSC2346 bridge info state, the bridge state, management commands
//     (bot.Command) and the provisioning HTTP API that integration managers
//     call.
//
// A bridge is then mostly protocol code:
//
//	br, err := bridge.New(ctx, cfg, myNetwork, log)
//	return br.Run(ctx)
//
// and the network calls br.RemoteMessage and friends as remote events
// arrive. Remote events of one portal are handled in the order the network
// calls; Matrix events of one room reach the network in order.
package bridge

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/template"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/bot"
)

//go:embed upgrades/*.sql
var upgrades embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgrades, "upgrades").Finish()

// Config is a bridge's config: the appservice's (inline) and the bridge's
// own keys. Bridges embed it in theirs.
type Config struct {
	framework.Config `yaml:",inline"`

	// CommandPrefix starts management commands ("!irc link #go"); default
	// "!" + the network ID + " ".
	CommandPrefix string `yaml:"command_prefix"`
	// Permissions maps a user ID, a server name or "*" to a Permission:
	// relay, user or admin. The most specific entry wins. Default: the
	// homeserver's users are "user", nobody else may use the bridge.
	Permissions map[string]Permission `yaml:"permissions"`
	Relay       RelayConfig           `yaml:"relay"`
	// Provisioning is the HTTP API integration managers call.
	Provisioning ProvisioningConfig `yaml:"provisioning"`
}

// RelayConfig is relay mode: one remote account speaks for Matrix users
// without a login of their own.
type RelayConfig struct {
	// Enabled lets portal admins turn relaying on (`relay on`).
	Enabled bool `yaml:"enabled"`
	// Default turns it on in every new portal.
	Default bool `yaml:"default"`
	// MessageFormat and EmoteFormat are Go text/templates over
	// .DisplayName, .UserID and .Message; defaults "{{.DisplayName}}:
	// {{.Message}}" and "* {{.DisplayName}} {{.Message}}".
	MessageFormat string `yaml:"message_format"`
	EmoteFormat   string `yaml:"emote_format"`
}

// ProvisioningConfig configures the provisioning API.
type ProvisioningConfig struct {
	// SharedSecret authenticates trusted callers (an integration manager),
	// who name the user they act for with ?user_id=. Empty: only OpenID
	// tokens are accepted. "disable" turns the API off.
	SharedSecret string `yaml:"shared_secret"`
}

// Permission is what a Matrix user may do with the bridge.
type Permission int

const (
	PermissionNone  Permission = iota
	PermissionRelay            // be relayed in portals that relay
	PermissionUser             // use the bridge: log in, link rooms they have power in
	PermissionAdmin            // everything, in every portal
)

var permissionNames = []string{"none", "relay", "user", "admin"}

func (p Permission) String() string {
	if p < 0 || int(p) >= len(permissionNames) {
		return fmt.Sprintf("Permission(%d)", int(p))
	}
	return permissionNames[p]
}

// UnmarshalText reads a permission name.
func (p *Permission) UnmarshalText(text []byte) error {
	for i, n := range permissionNames {
		if string(text) == n {
			*p = Permission(i)
			return nil
		}
	}
	return fmt.Errorf("unknown permission %q (want relay, user or admin)", text)
}

// MarshalText writes a permission name.
func (p Permission) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// Validate checks the config and fills in defaults; errors name the key.
func (c *Config) Validate() error {
	errs := []error{c.Config.Validate()}
	for key := range c.Permissions {
		if key != "*" && strings.HasPrefix(key, "@") {
			if _, _, err := id.UserID(key).Parse(); err != nil {
				errs = append(errs, fmt.Errorf("permissions: %q is not a user ID", key))
			}
		} else if key != "*" && (key == "" || strings.ContainsAny(key, "@:/ ")) {
			errs = append(errs, fmt.Errorf("permissions: %q is not a user ID, server name or \"*\"", key))
		}
	}
	if c.Permissions == nil {
		c.Permissions = map[string]Permission{c.ServerName: PermissionUser}
	}
	if c.Relay.MessageFormat == "" {
		c.Relay.MessageFormat = "{{.DisplayName}}: {{.Message}}"
	}
	if c.Relay.EmoteFormat == "" {
		c.Relay.EmoteFormat = "* {{.DisplayName}} {{.Message}}"
	}
	for key, f := range map[string]string{"relay.message_format": c.Relay.MessageFormat, "relay.emote_format": c.Relay.EmoteFormat} {
		if _, err := template.New(key).Parse(f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	return errors.Join(errs...)
}

// PermissionOf is userID's permission: the entry for the user, else for
// their server, else "*".
func (c *Config) PermissionOf(userID id.UserID) Permission {
	if p, ok := c.Permissions[string(userID)]; ok {
		return p
	}
	if p, ok := c.Permissions[userID.Homeserver()]; ok {
		return p
	}
	return c.Permissions["*"]
}

// Bridge is a running bridge: see the package documentation.
type Bridge struct {
	AS      *framework.Appservice
	Network Network
	Config  *Config
	Log     zerolog.Logger
	// Bot is the bridge bot: it runs the management commands; add a
	// network's own with Bot.Command.
	Bot *bot.Bot
	// DB holds the bridge's tables (and the framework's).
	DB *dbutil.Database

	relayMessage, relayEmote *template.Template

	mu            sync.Mutex
	portalsByID   map[string]*Portal
	portalsByRoom map[id.RoomID]*Portal
	users         map[id.UserID]*User
	state         State
}

// New creates the bridge's appservice (see framework.New) and its tables.
// Nothing runs until Start.
func New(ctx context.Context, cfg *Config, network Network, log zerolog.Logger) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	info := network.Info()
	if info.ID == "" {
		return nil, errors.New("bridge: the network's Info().ID is empty")
	}
	cfg.Config.Protocols = thirdPartyProtocolIDs(network)
	as, err := framework.New(ctx, &cfg.Config, log)
	if err != nil {
		return nil, err
	}
	db := as.DB.Child("bridge_version", upgradeTable, dbutil.ZeroLogger(log.With().Str("component", "bridge_db").Logger()))
	if err := db.Upgrade(ctx); err != nil {
		as.Stop()
		return nil, fmt.Errorf("database: upgrade bridge schema: %w", err)
	}
	b := &Bridge{
		AS:            as,
		Network:       network,
		Config:        cfg,
		Log:           log,
		DB:            db,
		relayMessage:  template.Must(template.New("relay").Parse(cfg.Relay.MessageFormat)),
		relayEmote:    template.Must(template.New("relay_emote").Parse(cfg.Relay.EmoteFormat)),
		portalsByID:   map[string]*Portal{},
		portalsByRoom: map[id.RoomID]*Portal{},
		users:         map[id.UserID]*User{},
		state:         State{Name: StateStarting},
	}
	b.Bot = bot.Attach(as)
	b.Bot.CommandPrefix = cfg.CommandPrefix
	if b.Bot.CommandPrefix == "" {
		b.Bot.CommandPrefix = "!" + info.ID + " "
	}
	b.Bot.InvitePolicy = func(ctx context.Context, _ id.RoomID, inviter id.UserID) bool {
		return cfg.PermissionOf(inviter) >= PermissionUser
	}
	b.registerCommands()
	as.AS.QueryHandler = aliasQueries{b}
	as.AS.Router.Handle("/_switchboard/provision/", b.provisioningHandler())
	b.registerThirdParty()
	as.OnEvent(b.handleMatrixEvent)
	return b, nil
}

// Start starts the network, then the appservice: no Matrix event (one
// left from the last run included) reaches the network before its Start.
func (b *Bridge) Start(ctx context.Context) error {
	if err := b.Network.Start(ctx, b); err != nil {
		return fmt.Errorf("start %s: %w", b.Network.Info().ID, err)
	}
	b.AS.BeforeClose(b.Network.Stop)
	return b.AS.Start(ctx)
}

// Stop stops receiving Matrix events, lets those accepted be delivered,
// then stops the network and closes the database.
func (b *Bridge) Stop() { b.AS.Stop() }

// Run runs the bridge until ctx ends.
func (b *Bridge) Run(ctx context.Context) error {
	if err := b.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	b.Stop()
	return nil
}
