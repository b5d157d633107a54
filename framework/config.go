package framework

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.mau.fi/util/random"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/internal/dbopen"
)

// Config is what an appservice built on the framework needs to run. Bots
// and bridges embed it in their own config (yaml `,inline` or a section).
type Config struct {
	// HomeserverURL is the client-server API base URL of the homeserver.
	HomeserverURL string `yaml:"homeserver_url"`
	// ServerName is the homeserver's domain: the part after ':' in user IDs.
	ServerName string `yaml:"server_name"`

	// ID is the appservice's registration ID, unique on the homeserver.
	ID string `yaml:"id"`
	// Listen is the host:port the appservice's HTTP server listens on.
	Listen string `yaml:"listen"`
	// URL is how the homeserver reaches that server (default http://Listen;
	// with port 0 in Listen, the port bound at start, the registration file
	// being rewritten for the homeserver to load).
	URL string `yaml:"url"`
	// Registration is the registration file's path (relative: to DataDir).
	// It is generated with random tokens when missing.
	Registration string `yaml:"registration"`

	// BotLocalpart, BotDisplayName and BotAvatar describe the bot user (the
	// registration's sender).
	BotLocalpart   string `yaml:"bot_localpart"`
	BotDisplayName string `yaml:"bot_displayname"`
	BotAvatar      string `yaml:"bot_avatar"`
	// GhostPrefix is the localpart prefix of the users the appservice
	// controls ("irc_" gives @irc_alice:server); its namespace is exclusive.
	// Empty: the appservice has only its bot user.
	GhostPrefix string `yaml:"ghost_prefix"`
	// AliasPrefix, when set, claims the exclusive alias namespace
	// #{AliasPrefix}*:server (portal rooms created on demand).
	AliasPrefix string `yaml:"alias_prefix"`
	// ReceiveEphemeral asks for typing, receipts, presence and to-device
	// messages in transactions.
	ReceiveEphemeral bool `yaml:"receive_ephemeral"`

	// Database is "sqlite:PATH" (relative: to DataDir) or "postgres://…".
	Database string `yaml:"database"`
	// Workers is how many rooms are processed in parallel (events of one
	// room are always processed in order). 0: 16.
	Workers int `yaml:"workers"`

	// DataDir is where relative paths point (not read from YAML).
	DataDir string `yaml:"-"`
	// Protocols are the third-party protocols the registration declares,
	// set by a bridge from its network (not read from YAML). nil leaves
	// the registration file's as they are (generate-registration, which
	// runs no network); empty declares none.
	Protocols []string `yaml:"-"`

	// urlFromListen: URL was derived from Listen (so Bind may correct it
	// to the port actually bound).
	urlFromListen bool
}

var localpartRE = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)

// Validate checks the config and fills in defaults (URL, Workers). Errors
// name the YAML key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if u, err := url.Parse(c.HomeserverURL); c.HomeserverURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("homeserver_url", "must be an http(s) URL, got %q", c.HomeserverURL)
	}
	if c.ServerName == "" || strings.ContainsAny(c.ServerName, "/@# \t") {
		bad("server_name", "must be the homeserver's domain, got %q", c.ServerName)
	}
	if c.ID == "" {
		bad("id", "must be set (the registration's unique ID)")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "must be host:port, got %q", c.Listen)
	}
	if (c.URL == "" || c.urlFromListen) && c.Listen != "" {
		c.URL = "http://" + c.Listen
		c.urlFromListen = true
	}
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("url", "must be an http(s) URL, got %q", c.URL)
	}
	if c.Registration == "" {
		bad("registration", "must be a file path")
	}
	if !localpartRE.MatchString(c.BotLocalpart) {
		bad("bot_localpart", "must be a valid localpart (a-z, 0-9, ._=-/+), got %q", c.BotLocalpart)
	}
	if c.GhostPrefix != "" && !localpartRE.MatchString(c.GhostPrefix) {
		bad("ghost_prefix", "must be a valid localpart prefix, got %q", c.GhostPrefix)
	}
	if c.GhostPrefix != "" && strings.HasPrefix(c.BotLocalpart, c.GhostPrefix) {
		bad("bot_localpart", "%q is inside ghost_prefix %q: the bot would be a ghost", c.BotLocalpart, c.GhostPrefix)
	}
	if c.BotAvatar != "" {
		if _, err := id.ParseContentURI(c.BotAvatar); err != nil {
			bad("bot_avatar", "must be an mxc:// URI, got %q", c.BotAvatar)
		}
	}
	if _, _, err := dbopen.Split(c.Database); err != nil {
		bad("database", "%v", err)
	}
	if c.Workers < 0 {
		bad("workers", "must not be negative")
	} else if c.Workers == 0 {
		c.Workers = 16
	}
	return errors.Join(errs...)
}

func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.DataDir, p)
}

// GhostID returns the user ID of the ghost with the given localpart
// suffix (escaped for the localpart grammar).
func (c *Config) GhostID(suffix string) id.UserID {
	return id.NewUserID(c.GhostPrefix+id.EncodeUserLocalpart(suffix), c.ServerName)
}

// BotID is the bot user's ID.
func (c *Config) BotID() id.UserID { return id.NewUserID(c.BotLocalpart, c.ServerName) }

// IsGhost reports whether userID is one of this appservice's ghosts.
func (c *Config) IsGhost(userID id.UserID) bool {
	if c.GhostPrefix == "" {
		return false
	}
	localpart, server, err := userID.Parse()
	return err == nil && server == c.ServerName && strings.HasPrefix(localpart, c.GhostPrefix)
}

// NewRegistration returns the registration this config describes, with
// fresh random tokens.
func (c *Config) NewRegistration() *appservice.Registration {
	reg := &appservice.Registration{
		AppToken:    random.String(64),
		ServerToken: random.String(64),
	}
	c.applyTo(reg)
	return reg
}

// applyTo writes everything but the tokens into reg.
func (c *Config) applyTo(reg *appservice.Registration) {
	falseVal := false
	reg.ID = c.ID
	reg.URL = c.URL
	reg.SenderLocalpart = c.BotLocalpart
	reg.RateLimited = &falseVal
	reg.EphemeralEvents = c.ReceiveEphemeral
	reg.SoruEphemeralEvents = false
	if c.Protocols != nil {
		reg.Protocols = slices.Clone(c.Protocols)
		if len(reg.Protocols) == 0 {
			reg.Protocols = nil
		}
	}
	server := regexp.QuoteMeta(c.ServerName)
	reg.Namespaces = appservice.Namespaces{}
	if c.GhostPrefix != "" {
		reg.Namespaces.UserIDs.Register(regexp.MustCompile("^@"+regexp.QuoteMeta(c.GhostPrefix)+".*:"+server+"$"), true)
	}
	if c.AliasPrefix != "" {
		reg.Namespaces.RoomAliases.Register(regexp.MustCompile("^#"+regexp.QuoteMeta(c.AliasPrefix)+".*:"+server+"$"), true)
	}
}

// EnsureRegistration loads the registration file, or writes a new one
// (mode 0600) when there is none. An existing file keeps its tokens and is
// rewritten when the config changed its URL, namespaces or bot: the
// homeserver must then load the new file (`switchboard appservice add`, or
// a SIGHUP where it already reads it). changed reports a written file.
func (c *Config) EnsureRegistration() (reg *appservice.Registration, changed bool, err error) {
	path := c.path(c.Registration)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		reg = c.NewRegistration()
	case err != nil:
		return nil, false, fmt.Errorf("registration: %w", err)
	default:
		reg = &appservice.Registration{}
		if err := yaml.Unmarshal(data, reg); err != nil {
			return nil, false, fmt.Errorf("registration %s: %w", path, err)
		}
		if reg.AppToken == "" || reg.ServerToken == "" {
			return nil, false, fmt.Errorf("registration %s: as_token and hs_token must be set", path)
		}
		before, _ := yaml.Marshal(reg)
		c.applyTo(reg)
		after, _ := yaml.Marshal(reg)
		if string(before) == string(after) {
			return reg, false, nil
		}
	}
	out, err := yaml.Marshal(reg)
	if err != nil {
		return nil, false, fmt.Errorf("registration: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("registration: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return nil, false, fmt.Errorf("registration: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, false, fmt.Errorf("registration: %w", err)
	}
	return reg, true, nil
}
