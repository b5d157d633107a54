package irc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
)

// Config is the IRC bridge's config: the framework bridge's keys (inline:
// homeserver_url, server_name, id, listen, registration, bot_localpart,
// ghost_prefix, alias_prefix, database, permissions, relay, provisioning…)
// and the IRC networks.
type Config struct {
	bridge.Config `yaml:",inline"`

	// Networks are the IRC networks bridged; at least one.
	Networks []NetworkConfig `yaml:"networks"`
	// MediaURL is the start of the links IRC users get for Matrix files:
	// the link is MediaURL/{server}/{media ID}/{file name}. Default:
	// homeserver_url + "/_matrix/client/v1/media/download", which needs
	// an access token since Matrix 1.11 (authenticated media): point it
	// at a public media proxy, or at "/_matrix/media/v3/download" of a
	// homeserver that still serves unauthenticated media.
	MediaURL string `yaml:"media_url"`
	// PasswordKeyFile holds the key that seals the services passwords
	// users store with `storepass` (relative: to data_dir; default
	// irc-passwords.key). It is made, 0600, when the first password is
	// stored; without it the stored passwords cannot be read.
	PasswordKeyFile string `yaml:"password_key_file"`
	// Identd answers ident (RFC 1413) queries, so that IRC servers see
	// each puppet's ident rather than "~" and the USER name. Off by
	// default: it needs port 113, and the networks must reach it at the
	// address the bridge connects from.
	Identd IdentdConfig `yaml:"identd"`
}

// IdentdConfig configures the ident server.
type IdentdConfig struct {
	Enabled bool `yaml:"enabled"`
	// Listen is the address to answer on (default "0.0.0.0:113").
	Listen string `yaml:"listen"`
}

// NetworkConfig is one IRC network.
type NetworkConfig struct {
	// ID is short and stable (a-z, 0-9, '-'): it is part of portal
	// aliases (#irc_{id}_#channel), ghost IDs (@irc_{id}_{nick}) and
	// portal IDs ({id}/#channel).
	ID string `yaml:"id"`
	// Name is what users read (default: ID).
	Name string `yaml:"name"`
	// Host and Port of the server (Port default: 6697 with TLS, else 6667).
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// TLS connects with TLS; TLSInsecure skips the certificate check
	// (self-signed test networks only).
	TLS         bool `yaml:"tls"`
	TLSInsecure bool `yaml:"tls_insecure"`
	// Password is the server password (PASS), for the bot and the
	// puppets.
	Password string `yaml:"password"`
	// SASL logs the bot in with SASL PLAIN.
	SASL *SASLConfig `yaml:"sasl"`
	// NickServ is the services' nick that puppets IDENTIFY to (where the
	// network offers no SASL) and ask to REGAIN their nick (default
	// "NickServ").
	NickServ string `yaml:"nickserv"`
	// BotNick is the bridge bot's nick (default "mxbridge").
	BotNick string `yaml:"bot_nick"`
	// NickTemplate makes a Matrix user's nick (Go text/template over
	// .Localpart, .Server, .UserID and .DisplayName; default
	// "{{.Localpart}}[m]"). The result is made a valid IRC nick:
	// characters IRC does not allow become "_", and it is shortened to
	// the server's NICKLEN (the localpart first).
	NickTemplate string `yaml:"nick_template"`
	// IdentTemplate makes the puppets' ident (USER name), same data;
	// default "{{.Localpart}}", reduced to a-z and 0-9, at most 10.
	IdentTemplate string `yaml:"ident_template"`
	// DisplaynameSuffix is appended to IRC users' nicks for their ghosts'
	// display names, e.g. " (IRC)". Default none.
	DisplaynameSuffix string `yaml:"displayname_suffix"`
	// RateLimit is every connection's flood control (bot and puppets).
	RateLimit RateLimit `yaml:"rate_limit"`
	// ConnectionRate paces new connections to the network (bot and
	// puppets together, reconnections included).
	ConnectionRate ConnectionRate `yaml:"connection_rate"`
	// IdleTimeout: a puppet that sent nothing for this long quits IRC; it
	// comes back with the user's next message. Default 24h.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxLines: a Matrix message that takes more IRC lines than this is
	// cut, its last line a link to the whole message. Default 5.
	MaxLines int `yaml:"max_lines"`
	// Reconnect is the backoff between attempts to reach the network.
	Reconnect Backoff `yaml:"reconnect"`
	// NetsplitGrace is how long the ghost of a user who quit in a
	// netsplit (a QUIT saying "irc.a.net irc.b.net") stays in the rooms
	// waiting for them to come back; then it leaves ("netsplit").
	// Default 60s.
	NetsplitGrace time.Duration `yaml:"netsplit_grace"`
	// LazyMembersOver: in channels with more users than this, IRC users'
	// ghosts join the room when they first speak (operators and voiced
	// users at once), not all when the channel is bridged, so a channel of
	// thousands does not flood the room and the homeserver with joins.
	// Default 500; -1: never lazy.
	LazyMembersOver int `yaml:"lazy_members_over"`
	// Mappings links IRC channels to existing Matrix rooms when the bot
	// connects ("#channel": "!roomid", or {room: "!roomid", key: "…"} for
	// a channel with a key); the bot must be invited to the room.
	Mappings map[string]ChannelMapping `yaml:"mappings"`
	// Channels are joined by the bot at start and get their portal room
	// then (with the alias #irc_{id}_#channel), before any Matrix user
	// asks for them.
	Channels []string `yaml:"channels"`

	nickTmpl, identTmpl *template.Template
}

// ChannelMapping is a configured channel → room link: in YAML, the room
// ID alone, or {room: "!roomid", key: "…"}.
type ChannelMapping struct {
	Room id.RoomID `yaml:"room"`
	// Key is the channel's key (+k): the bot and the puppets join with
	// it. When a channel operator changes the key on IRC, the bridge
	// follows (and keeps the new key across restarts, until this one is
	// changed).
	Key string `yaml:"key"`
}

// UnmarshalYAML reads a room ID, or a mapping of room and key (strictly:
// other keys are errors).
func (m *ChannelMapping) UnmarshalYAML(node *yaml.Node) error {
	switch node.Kind {
	case yaml.ScalarNode:
		return node.Decode(&m.Room)
	case yaml.MappingNode:
		for i := 0; i+1 < len(node.Content); i += 2 {
			key, value := node.Content[i], node.Content[i+1]
			var err error
			switch key.Value {
			case "room":
				err = value.Decode(&m.Room)
			case "key":
				err = value.Decode(&m.Key)
			default:
				err = fmt.Errorf("line %d: unknown key %q in a channel mapping (it takes room and key)", key.Line, key.Value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("line %d: a channel mapping is a room ID or {room: …, key: …}", node.Line)
}

// validKey reports whether a channel key can be sent in a JOIN: not
// empty, no spaces, commas, colons in front or line breaks.
func validKey(key string) bool {
	return key != "" && key[0] != ':' && !strings.ContainsAny(key, " ,\a\r\n\x00")
}

// SASLConfig are SASL PLAIN credentials.
type SASLConfig struct {
	Account  string `yaml:"account"`
	Password string `yaml:"password"`
}

// RateLimit is a connection's flood control: LinesPerSecond after a
// burst of Burst lines (defaults 2 and 5).
type RateLimit struct {
	LinesPerSecond float64 `yaml:"lines_per_second"`
	Burst          int     `yaml:"burst"`
}

// ConnectionRate is how many new connections a second (default 5, after a
// burst of 5).
type ConnectionRate struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Backoff bounds the delay between reconnection attempts (defaults 2s and
// 5m; each attempt doubles it, with jitter).
type Backoff struct {
	Min time.Duration `yaml:"min"`
	Max time.Duration `yaml:"max"`
}

var networkIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Validate checks the config and fills in defaults; errors name the key.
func (c *Config) Validate() error {
	errs := []error{c.Config.Validate()}
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.GhostPrefix == "" {
		bad("ghost_prefix", "must be set: IRC users are ghosts (e.g. \"irc_\")")
	}
	if c.AliasPrefix == "" {
		bad("alias_prefix", "must be set: channels are joined by alias (e.g. \"irc_\")")
	}
	if len(c.Networks) == 0 {
		bad("networks", "must list at least one IRC network")
	}
	// Element's room directory lists IRC networks (third-party protocol
	// irc): declared in the registration, generate-registration's too.
	c.Protocols = []string{"irc"}
	if c.MediaURL != "" {
		if u, err := url.Parse(c.MediaURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("media_url", "must be an http(s) URL, got %q", c.MediaURL)
		}
	}
	c.MediaURL = strings.TrimRight(c.MediaURL, "/")
	if c.Identd.Listen == "" {
		c.Identd.Listen = "0.0.0.0:113"
	} else if _, _, err := net.SplitHostPort(c.Identd.Listen); err != nil {
		bad("identd.listen", "must be host:port, got %q", c.Identd.Listen)
	}
	seen := map[string]bool{}
	for i := range c.Networks {
		n := &c.Networks[i]
		errs = append(errs, n.validate(fmt.Sprintf("networks[%d]", i)))
		if n.ID != "" && seen[n.ID] {
			bad(fmt.Sprintf("networks[%d].id", i), "%q is the ID of another network", n.ID)
		}
		seen[n.ID] = true
	}
	return errors.Join(errs...)
}

// passwordKeyPath is PasswordKeyFile, resolved against DataDir.
func (c *Config) passwordKeyPath() string {
	p := c.PasswordKeyFile
	if p == "" {
		p = "irc-passwords.key"
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.DataDir, p)
	}
	return p
}

// mediaBase is MediaURL or its default.
func (c *Config) mediaBase() string {
	if c.MediaURL != "" {
		return c.MediaURL
	}
	return strings.TrimRight(c.HomeserverURL, "/") + "/_matrix/client/v1/media/download"
}

// EnvPassword and EnvSASLPassword name the environment variables that,
// when set, override the network's password and sasl.password, so that
// secrets need not be in the file: SWITCHBOARD_IRC_{ID}_PASSWORD and
// SWITCHBOARD_IRC_{ID}_SASL_PASSWORD, the ID in capitals with '-' as '_'.
func (n *NetworkConfig) EnvPassword() string { return n.envPrefix() + "PASSWORD" }

func (n *NetworkConfig) EnvSASLPassword() string { return n.envPrefix() + "SASL_PASSWORD" }

func (n *NetworkConfig) envPrefix() string {
	return "SWITCHBOARD_IRC_" + strings.ToUpper(strings.ReplaceAll(n.ID, "-", "_")) + "_"
}

// validate checks the network's config, filling in defaults and the
// secrets given in the environment.
func (n *NetworkConfig) validate(prefix string) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, key, fmt.Sprintf(format, args...)))
	}
	if !networkIDRE.MatchString(n.ID) {
		bad("id", "must be 1-32 of a-z, 0-9 and '-' (starting with a letter or digit), got %q", n.ID)
	}
	if n.Name == "" {
		n.Name = n.ID
	}
	if n.Host == "" || strings.ContainsAny(n.Host, " /[]") {
		bad("host", "must be a host name or address, got %q", n.Host)
	}
	if n.Port == 0 {
		n.Port = 6667
		if n.TLS {
			n.Port = 6697
		}
	} else if n.Port < 0 || n.Port > 65535 {
		bad("port", "must be 1-65535, got %d", n.Port)
	}
	// Secrets may come from the environment instead of the file.
	if v := os.Getenv(n.EnvPassword()); v != "" && n.ID != "" {
		n.Password = v
	}
	if v := os.Getenv(n.EnvSASLPassword()); v != "" && n.ID != "" {
		if n.SASL == nil {
			bad("sasl", "%s is set, but there is no sasl section to give the account", n.EnvSASLPassword())
		} else {
			n.SASL.Password = v
		}
	}
	if n.SASL != nil && (n.SASL.Account == "" || n.SASL.Password == "") {
		bad("sasl", "needs account and password (the password may come from %s)", n.EnvSASLPassword())
	}
	if n.BotNick == "" {
		n.BotNick = "mxbridge"
	} else if sanitizeNick(n.BotNick) != n.BotNick {
		bad("bot_nick", "%q is not a valid IRC nick", n.BotNick)
	}
	if n.LazyMembersOver == 0 {
		n.LazyMembersOver = 500
	} else if n.LazyMembersOver < -1 {
		bad("lazy_members_over", "must be -1 (never lazy) or more, got %d", n.LazyMembersOver)
	}
	if n.NickServ == "" {
		n.NickServ = "NickServ"
	} else if sanitizeNick(n.NickServ) != n.NickServ {
		bad("nickserv", "%q is not a valid IRC nick", n.NickServ)
	}
	if n.NickTemplate == "" {
		n.NickTemplate = "{{.Localpart}}[m]"
	}
	if n.IdentTemplate == "" {
		n.IdentTemplate = "{{.Localpart}}"
	}
	var err error
	if n.nickTmpl, err = parseUserTemplate(n.NickTemplate); err != nil {
		bad("nick_template", "%v", err)
	}
	if n.identTmpl, err = parseUserTemplate(n.IdentTemplate); err != nil {
		bad("ident_template", "%v", err)
	}
	if n.RateLimit.LinesPerSecond < 0 || n.RateLimit.Burst < 0 {
		bad("rate_limit", "lines_per_second and burst must not be negative")
	}
	if n.RateLimit.LinesPerSecond == 0 {
		n.RateLimit.LinesPerSecond = 2
	}
	if n.RateLimit.Burst == 0 {
		n.RateLimit.Burst = 5
	}
	if n.ConnectionRate.PerSecond < 0 || n.ConnectionRate.Burst < 0 {
		bad("connection_rate", "per_second and burst must not be negative")
	}
	if n.ConnectionRate.PerSecond == 0 {
		n.ConnectionRate.PerSecond = 5
	}
	if n.ConnectionRate.Burst == 0 {
		n.ConnectionRate.Burst = 5
	}
	switch {
	case n.IdleTimeout < 0:
		bad("idle_timeout", "must not be negative")
	case n.IdleTimeout == 0:
		n.IdleTimeout = 24 * time.Hour
	}
	switch {
	case n.MaxLines < 0:
		bad("max_lines", "must not be negative")
	case n.MaxLines == 0:
		n.MaxLines = 5
	}
	if n.Reconnect.Min < 0 || n.Reconnect.Max < 0 {
		bad("reconnect", "min and max must not be negative")
	}
	if n.Reconnect.Min == 0 {
		n.Reconnect.Min = 2 * time.Second
	}
	if n.Reconnect.Max == 0 {
		n.Reconnect.Max = 5 * time.Minute
	}
	switch {
	case n.NetsplitGrace < 0:
		bad("netsplit_grace", "must not be negative")
	case n.NetsplitGrace == 0:
		n.NetsplitGrace = time.Minute
	}
	if n.Reconnect.Max < n.Reconnect.Min {
		bad("reconnect", "max (%s) is below min (%s)", n.Reconnect.Max, n.Reconnect.Min)
	}
	for ch, m := range n.Mappings {
		if !plausibleChannel(ch) {
			bad("mappings", "%q is not an IRC channel name", ch)
		}
		if !validRoomID(m.Room) {
			bad("mappings", "%s: %q is not a room ID (!…)", ch, m.Room)
		}
		if m.Key != "" && !validKey(m.Key) { // the key itself is a secret: not in the error
			bad("mappings", "%s: the key must have no spaces, commas or line breaks, nor start with \":\"", ch)
		}
	}
	for i, ch := range n.Channels {
		if !plausibleChannel(ch) {
			bad(fmt.Sprintf("channels[%d]", i), "%q is not an IRC channel name", ch)
		}
	}
	return errors.Join(errs...)
}

// plausibleChannel checks what holds for a channel name on any server
// (the server's CHANTYPES are checked once it announced them).
func plausibleChannel(name string) bool {
	return len(name) >= 2 && strings.IndexByte("#&+!", name[0]) >= 0 && !strings.ContainsAny(name, " ,\a\r\n\x00")
}

// userData is what nick and ident templates see.
type userData struct {
	UserID    id.UserID
	Localpart string
	Server    string
	// displayName is looked up only when a template asks for it.
	displayName func() string
}

// DisplayName is the user's Matrix display name (their localpart when
// they have none).
func (d userData) DisplayName() string {
	if d.displayName != nil {
		if name := d.displayName(); name != "" {
			return name
		}
	}
	return d.Localpart
}

func newUserData(userID id.UserID, displayName func() string) userData {
	localpart, server, _ := userID.Parse()
	return userData{UserID: userID, Localpart: localpart, Server: server, displayName: displayName}
}

func parseUserTemplate(text string) (*template.Template, error) {
	t, err := template.New("").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, newUserData("@alice:example.org", nil)); err != nil {
		return nil, err
	}
	return t, nil
}

func execTemplate(t *template.Template, d userData) string {
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return ""
	}
	return b.String()
}
