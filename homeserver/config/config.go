// Package config owns switchboard.yaml: its schema, defaults, the commented
// file that `switchboard init` writes, and validation that names the offending
// key. Every other package receives an already-validated *Config.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-im/switchboard/internal/dbopen"
	"github.com/switchboard-im/switchboard/internal/netguard"
	"gopkg.in/yaml.v3"
)

// FileName is the config file's name inside the data directory.
const FileName = "switchboard.yaml"

// Registration modes for /register.
const (
	RegistrationClosed = "closed"
	RegistrationToken  = "token"
	RegistrationOpen   = "open"
)

// Config is the whole of switchboard.yaml. Field comments live in template.go,
// which is what operators read; keep the two in step.
type Config struct {
	ServerName       string `yaml:"server_name"`
	PublicURL        string `yaml:"public_url"`
	Listen           string `yaml:"listen"`
	Database         string `yaml:"database"`
	DatabaseMaxConns int    `yaml:"database_max_conns"`
	SigningKeyPath   string `yaml:"signing_key_path"`

	// AppserviceRegistrations lists registration files kept outside
	// DATA/appservices/ (which is always read); package appservice loads
	// and checks them.
	AppserviceRegistrations []string `yaml:"appservice_registrations"`

	Registration RegistrationConfig `yaml:"registration"`
	Auth         AuthConfig         `yaml:"auth"`
	RateLimits   RateLimitsConfig   `yaml:"rate_limits"`
	HTTP         HTTPConfig         `yaml:"http"`
	Media        MediaConfig        `yaml:"media"`
	Push         PushConfig         `yaml:"push"`
	TURN         TURNConfig         `yaml:"turn"`
	WellKnown    WellKnownConfig    `yaml:"well_known"`
	Metrics      MetricsConfig      `yaml:"metrics"`
	Logging      LoggingConfig      `yaml:"logging"`

	// Webhooks is the webhook bridge's section, which "switchboard run"
	// hands to package webhooks (the homeserver neither reads nor checks
	// it: the bridge is a separate component that talks to it over HTTP).
	Webhooks yaml.Node `yaml:"webhooks"`
	// IRC is the IRC bridge's section (package bridges/irc), in the same
	// way; "switchboard run" starts the bridge when it lists networks.
	IRC yaml.Node `yaml:"irc"`
	// WebhooksListen is the hooks_listen that `init` writes into that
	// section (a flag of init; never read back from the file).
	WebhooksListen string `yaml:"-"`

	// DataDir is where the file was loaded from; relative paths resolve against it.
	DataDir string `yaml:"-"`
}

type RegistrationConfig struct {
	Mode         string `yaml:"mode"`
	SharedSecret string `yaml:"shared_secret"`
}

type AuthConfig struct {
	// AccessTokenLifetime applies to tokens issued to clients that support
	// refresh tokens; others get non-expiring tokens (the spec leaves this to us).
	AccessTokenLifetime Duration `yaml:"access_token_lifetime"`
	PasswordHashing     Argon2   `yaml:"password_hashing"`
	MinPasswordLength   int      `yaml:"min_password_length"`
}

// Argon2 holds argon2id cost parameters.
type Argon2 struct {
	MemoryKiB   uint32 `yaml:"memory_kib"`
	Iterations  uint32 `yaml:"iterations"`
	Parallelism uint8  `yaml:"parallelism"`
}

type RateLimit struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

type RateLimitsConfig struct {
	Login         RateLimit `yaml:"login"`
	FailedLogin   RateLimit `yaml:"failed_login"`
	Register      RateLimit `yaml:"register"`
	AdminRegister RateLimit `yaml:"admin_register"`
	// Per user: content reports, URL preview fetches (previews not in the
	// cache) and space hierarchy requests (each walks the tree).
	Report     RateLimit `yaml:"report"`
	URLPreview RateLimit `yaml:"url_preview"`
	Hierarchy  RateLimit `yaml:"hierarchy"`
}

type HTTPConfig struct {
	MaxBodyBytes    int64    `yaml:"max_body_bytes"`
	TrustedProxies  []string `yaml:"trusted_proxies"`
	ReadTimeout     Duration `yaml:"read_timeout"`
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// MediaConfig is the content repository's (package media).
type MediaConfig struct {
	// StorePath is the directory holding uploaded files (relative: to the
	// data dir). Processes sharing a database must share it too.
	StorePath     string `yaml:"store_path"`
	MaxUploadSize int64  `yaml:"max_upload_size"`
	// UserQuota bounds the bytes one user may upload in all (0: no limit).
	UserQuota int64 `yaml:"user_quota"`
	// LegacyUnauthenticatedMedia serves the deprecated /_matrix/media/…/download
	// and …/thumbnail endpoints without an access token; off, they are
	// frozen (spec v1.11).
	LegacyUnauthenticatedMedia bool `yaml:"legacy_unauthenticated_media"`
	// MaxPendingUploads bounds a user's media IDs created with
	// POST /_matrix/media/v1/create and not yet uploaded or expired.
	MaxPendingUploads int `yaml:"max_pending_uploads"`
	// UnusedExpiry is how long such a media ID waits for its upload.
	UnusedExpiry Duration `yaml:"unused_expiry"`
	// ThumbnailSizes are the thumbnails generated (on demand); a request
	// gets the smallest one at least as large as it asked.
	ThumbnailSizes []ThumbnailSize `yaml:"thumbnail_sizes"`
	// MaxThumbnailPixels is the largest image (width × height) decoded for
	// a thumbnail: decoding costs memory in proportion.
	MaxThumbnailPixels int64            `yaml:"max_thumbnail_pixels"`
	URLPreview         URLPreviewConfig `yaml:"url_preview"`
}

// Thumbnail methods (the spec's "method" query parameter).
const (
	ThumbnailCrop  = "crop"
	ThumbnailScale = "scale"
)

// ThumbnailSize is one entry of media.thumbnail_sizes.
type ThumbnailSize struct {
	Width  int    `yaml:"width"`
	Height int    `yaml:"height"`
	Method string `yaml:"method"`
}

// URLPreviewConfig is media.url_preview: GET /_matrix/client/v1/media/preview_url.
type URLPreviewConfig struct {
	Enabled bool `yaml:"enabled"`
	// AllowedNetworks are CIDRs (or single addresses) the preview fetcher
	// may connect to although they are private, loopback, link-local or
	// otherwise not public; everything else not public is refused.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// MaxPageSize bounds the bytes read of a page (images: max_upload_size).
	MaxPageSize int64 `yaml:"max_page_size"`
	// Timeout bounds one fetch, redirects and body included.
	Timeout Duration `yaml:"timeout"`
	// CacheDuration is how long a preview is served from the cache.
	CacheDuration Duration `yaml:"cache_duration"`
}

// PushConfig is the push section: delivery to push gateways (package push).
type PushConfig struct {
	// AllowedNetworks are CIDRs (or single addresses) pushers may reach
	// although they are private, loopback, link-local or otherwise not
	// public; everything else not public is refused.
	AllowedNetworks []string `yaml:"allowed_networks"`
}

// TURNConfig is the turn section: the TURN servers that
// GET /_matrix/client/v3/voip/turnServer hands to VoIP clients, with
// credentials either made per user from coturn's shared secret (the TURN
// REST API draft: use-auth-secret) or fixed.
type TURNConfig struct {
	// URIs are turn: and turns: URIs (RFC 7065) as clients reach the
	// server; empty, the server offers no TURN.
	URIs []string `yaml:"uris"`
	// SharedSecret is coturn's static-auth-secret.
	SharedSecret string `yaml:"shared_secret"`
	// Username and Password are fixed credentials, given to every user,
	// instead of SharedSecret.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// UserLifetime is how long credentials made from SharedSecret are
	// valid (the ttl clients are told, for either kind).
	UserLifetime Duration `yaml:"user_lifetime"`
	// AllowGuests gives credentials to guest accounts too.
	AllowGuests bool `yaml:"allow_guests"`
}

// DefaultThumbnailSizes are the sizes the spec recommends (and Element asks for).
func DefaultThumbnailSizes() []ThumbnailSize {
	return []ThumbnailSize{
		{Width: 32, Height: 32, Method: ThumbnailCrop},
		{Width: 96, Height: 96, Method: ThumbnailCrop},
		{Width: 320, Height: 240, Method: ThumbnailScale},
		{Width: 640, Height: 480, Method: ThumbnailScale},
		{Width: 800, Height: 600, Method: ThumbnailScale},
	}
}

type WellKnownConfig struct {
	ClientBaseURL string `yaml:"client_base_url"`
	Server        string `yaml:"server"`
}

type MetricsConfig struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
}

type LoggingConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Duration is a time.Duration written as "5m", "30s" in YAML.
type Duration time.Duration

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d *Duration) UnmarshalYAML(node *yaml.Node) error {
	var s string
	if err := node.Decode(&s); err != nil {
		return fmt.Errorf("line %d: expected a duration such as 30s or 5m", node.Line)
	}
	parsed, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: invalid duration %q (use e.g. 30s, 5m, 1h)", node.Line, s)
	}
	*d = Duration(parsed)
	return nil
}

func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns the configuration a fresh `switchboard init` starts from,
// without secrets (Generate fills those in).
func Default() *Config {
	return &Config{
		ServerName:     "localhost",
		PublicURL:      "http://127.0.0.1:8008",
		Listen:         "127.0.0.1:8008",
		Database:       "sqlite:switchboard.db",
		SigningKeyPath: "signing.key",
		Registration:   RegistrationConfig{Mode: RegistrationClosed},
		Auth: AuthConfig{
			AccessTokenLifetime: Duration(5 * time.Minute),
			// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
			PasswordHashing:   Argon2{MemoryKiB: 19456, Iterations: 2, Parallelism: 1},
			MinPasswordLength: 8,
		},
		RateLimits: RateLimitsConfig{
			Login:         RateLimit{PerSecond: 0.5, Burst: 10},
			FailedLogin:   RateLimit{PerSecond: 0.1, Burst: 5},
			Register:      RateLimit{PerSecond: 0.2, Burst: 5},
			AdminRegister: RateLimit{PerSecond: 1, Burst: 10},
			Report:        RateLimit{PerSecond: 0.1, Burst: 10},
			URLPreview:    RateLimit{PerSecond: 0.5, Burst: 20},
			Hierarchy:     RateLimit{PerSecond: 5, Burst: 20},
		},
		HTTP: HTTPConfig{
			MaxBodyBytes:    1 << 20,
			ReadTimeout:     Duration(30 * time.Second),
			ShutdownTimeout: Duration(10 * time.Second),
		},
		Media: MediaConfig{
			StorePath:          "media",
			MaxUploadSize:      50 << 20,
			MaxPendingUploads:  5,
			UnusedExpiry:       Duration(24 * time.Hour),
			ThumbnailSizes:     DefaultThumbnailSizes(),
			MaxThumbnailPixels: 32 << 20,
			URLPreview: URLPreviewConfig{
				MaxPageSize:   1 << 20,
				Timeout:       Duration(10 * time.Second),
				CacheDuration: Duration(time.Hour),
			},
		},
		TURN:    TURNConfig{UserLifetime: Duration(time.Hour), AllowGuests: true},
		Metrics: MetricsConfig{Enabled: false, Listen: "127.0.0.1:9108"},
		Logging: LoggingConfig{Level: "info", Format: "pretty"},

		WebhooksListen: "127.0.0.1:8009",
	}
}

// Path returns the config file path for a data directory.
func Path(dataDir string) string { return filepath.Join(dataDir, FileName) }

// Load reads and validates DIR/switchboard.yaml. Unknown keys are errors.
func Load(dataDir string) (*Config, error) {
	path := Path(dataDir)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg.DataDir = dataDir
	return cfg, nil
}

// Parse decodes YAML over the defaults, applies the environment overrides
// and validates the result.
func Parse(data []byte) (*Config, error) { return parse(data, true) }

func parse(data []byte, withEnv bool) (*Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, friendlyYAMLError(data, err)
	}
	if withEnv {
		cfg.applyEnv()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Environment variables that override secrets, so they need not sit in the
// file (containers, systemd credentials).
const (
	EnvDatabase         = "SWITCHBOARD_DATABASE"
	EnvSharedSecret     = "SWITCHBOARD_REGISTRATION_SHARED_SECRET"
	EnvTURNSharedSecret = "SWITCHBOARD_TURN_SHARED_SECRET"
	EnvTURNPassword     = "SWITCHBOARD_TURN_PASSWORD"
)

func (c *Config) applyEnv() {
	if v := os.Getenv(EnvDatabase); v != "" {
		c.Database = v
	}
	if v := os.Getenv(EnvSharedSecret); v != "" {
		c.Registration.SharedSecret = v
	}
	if v := os.Getenv(EnvTURNSharedSecret); v != "" {
		c.TURN.SharedSecret = v
	}
	if v := os.Getenv(EnvTURNPassword); v != "" {
		c.TURN.Password = v
	}
}

var (
	yamlFieldNotFound = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)
	yamlTypeError     = regexp.MustCompile(`line (\d+): cannot unmarshal !!(\w+) (?:` + "`" + `[^` + "`" + `]*` + "`" + ` )?into (\S+)`)
	yamlLinePrefix    = regexp.MustCompile(`line (\d+): `)
)

// friendlyYAMLError turns yaml.v3's Go-flavoured messages into ones that
// name the key as the operator wrote it (e.g. "registration.mode").
func friendlyYAMLError(data []byte, err error) error {
	msg := err.Error()
	var parts []string
	for _, m := range yamlFieldNotFound.FindAllStringSubmatch(msg, -1) {
		parts = append(parts, fmt.Sprintf("line %s: unknown key %q", m[1], m[2]))
	}
	for _, m := range yamlTypeError.FindAllStringSubmatch(msg, -1) {
		line, _ := strconv.Atoi(m[1])
		key := keyAtLine(data, line)
		parts = append(parts, fmt.Sprintf("%s (line %d): expected %s, not a YAML %s", key, line, goTypeName(m[3]), m[2]))
	}
	if len(parts) > 0 {
		return errors.New(strings.Join(parts, "; "))
	}
	// Errors from our own UnmarshalYAML methods (durations) carry a line
	// but no key: add it.
	if m := yamlLinePrefix.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if key := keyAtLine(data, line); key != "" {
			msg = strings.Replace(msg, m[0], key+" (line "+m[1]+"): ", 1)
		}
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	return errors.New(msg)
}

// keyAtLine returns the dotted path of the key whose value starts at line.
func keyAtLine(data []byte, line int) string {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return ""
	}
	var walk func(n *yaml.Node, prefix string) string
	walk = func(n *yaml.Node, prefix string) string {
		if n.Kind != yaml.MappingNode {
			return ""
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if found := walk(v, path); found != "" {
				return found
			}
			if v.Line == line || k.Line == line {
				return path
			}
		}
		return ""
	}
	return walk(doc.Content[0], "")
}

func goTypeName(t string) string {
	switch {
	case t == "string":
		return "a string"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "uint"):
		return "a whole number ≥ 0"
	case strings.HasPrefix(t, "int"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	default:
		return "a mapping"
	}
}

// KeyError is a validation failure of one key.
type KeyError struct {
	Key     string
	Problem string
}

func (e *KeyError) Error() string { return fmt.Sprintf("%s: %s", e.Key, e.Problem) }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Problem: fmt.Sprintf(format, args...)}
}

var serverNameRegex = regexp.MustCompile(`^(\[[0-9a-fA-F:.]+\]|[0-9.]+|[a-zA-Z0-9.-]+)(:[0-9]{1,5})?$`)

// Validate checks every key and returns the first problem found.
func (c *Config) Validate() error {
	if c.ServerName == "" || len(c.ServerName) > 230 || !serverNameRegex.MatchString(c.ServerName) {
		return keyErr("server_name", "%q is not a valid Matrix server name (a hostname, optionally with :port)", c.ServerName)
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return keyErr("public_url", "%q must be an absolute http:// or https:// URL", c.PublicURL)
	}
	if err := validHostPort(c.Listen); err != nil {
		return keyErr("listen", "%v", err)
	}
	if _, _, err := dbopen.Split(c.Database); err != nil {
		return keyErr("database", "%v", err)
	}
	if c.DatabaseMaxConns < 0 {
		return keyErr("database_max_conns", "must not be negative")
	}
	if c.SigningKeyPath == "" {
		return keyErr("signing_key_path", "must be set")
	}
	seenRegistrations := make(map[string]int, len(c.AppserviceRegistrations))
	for i, p := range c.AppserviceRegistrations {
		key := fmt.Sprintf("appservice_registrations[%d]", i)
		if strings.TrimSpace(p) == "" {
			return keyErr(key, "must be the path of a registration file, not empty")
		}
		if j, dup := seenRegistrations[filepath.Clean(p)]; dup {
			return keyErr(key, "%q is already listed as appservice_registrations[%d]", p, j)
		}
		seenRegistrations[filepath.Clean(p)] = i
	}
	switch c.Registration.Mode {
	case RegistrationClosed, RegistrationToken, RegistrationOpen:
	default:
		return keyErr("registration.mode", "%q must be one of closed, token, open", c.Registration.Mode)
	}
	if c.Registration.SharedSecret != "" && len(c.Registration.SharedSecret) < 16 {
		return keyErr("registration.shared_secret", "must be at least 16 characters (or empty to disable)")
	}
	if c.Auth.AccessTokenLifetime < 0 {
		return keyErr("auth.access_token_lifetime", "must not be negative")
	}
	if c.Auth.AccessTokenLifetime != 0 && c.Auth.AccessTokenLifetime.D() < 10*time.Second {
		return keyErr("auth.access_token_lifetime", "must be 0 (never expire) or at least 10s")
	}
	h := c.Auth.PasswordHashing
	if h.MemoryKiB < 1024 || h.MemoryKiB > 4<<20 || h.Iterations < 1 || h.Iterations > 100 || h.Parallelism < 1 || h.Parallelism > 64 {
		return keyErr("auth.password_hashing", "memory_kib must be 1024–4194304, iterations 1–100, parallelism 1–64")
	}
	if c.Auth.MinPasswordLength < 0 || c.Auth.MinPasswordLength > 512 {
		return keyErr("auth.min_password_length", "must be between 0 and 512")
	}
	for name, rl := range map[string]RateLimit{
		"login": c.RateLimits.Login, "failed_login": c.RateLimits.FailedLogin,
		"register": c.RateLimits.Register, "admin_register": c.RateLimits.AdminRegister,
		"report": c.RateLimits.Report, "url_preview": c.RateLimits.URLPreview, "hierarchy": c.RateLimits.Hierarchy,
	} {
		if rl.PerSecond < 0 || rl.Burst < 0 || (rl.PerSecond > 0 && rl.Burst == 0) {
			return keyErr("rate_limits."+name, "per_second and burst must be ≥ 0, and burst ≥ 1 when per_second > 0 (per_second 0 disables the limit)")
		}
	}
	for i, p := range c.HTTP.TrustedProxies {
		if _, _, err := net.ParseCIDR(p); err != nil && net.ParseIP(p) == nil {
			return keyErr(fmt.Sprintf("http.trusted_proxies[%d]", i), "%q is not an IP address or CIDR", p)
		}
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		return keyErr("http.max_body_bytes", "must be at least 1024")
	}
	if c.HTTP.ReadTimeout <= 0 {
		return keyErr("http.read_timeout", "must be positive")
	}
	if c.HTTP.ShutdownTimeout <= 0 {
		return keyErr("http.shutdown_timeout", "must be positive")
	}
	if strings.TrimSpace(c.Media.StorePath) == "" {
		return keyErr("media.store_path", "must be set")
	}
	if c.Media.MaxUploadSize < 1024 {
		return keyErr("media.max_upload_size", "must be at least 1024")
	}
	if err := c.Media.validate(); err != nil {
		return err
	}
	for i, n := range c.Push.AllowedNetworks {
		if _, err := netguard.ParseNetwork(n); err != nil {
			return keyErr(fmt.Sprintf("push.allowed_networks[%d]", i), "%v", err)
		}
	}
	if err := c.TURN.validate(); err != nil {
		return err
	}
	if c.WellKnown.ClientBaseURL != "" {
		if u, err := url.Parse(c.WellKnown.ClientBaseURL); err != nil || u.Host == "" {
			return keyErr("well_known.client_base_url", "%q must be an absolute URL", c.WellKnown.ClientBaseURL)
		}
	}
	if c.WellKnown.Server != "" && !serverNameRegex.MatchString(c.WellKnown.Server) {
		return keyErr("well_known.server", "%q must be host or host:port", c.WellKnown.Server)
	}
	if c.Metrics.Enabled {
		if err := validHostPort(c.Metrics.Listen); err != nil {
			return keyErr("metrics.listen", "%v", err)
		}
	}
	switch c.Logging.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		return keyErr("logging.level", "%q must be one of trace, debug, info, warn, error", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "pretty", "json":
	default:
		return keyErr("logging.format", "%q must be pretty or json", c.Logging.Format)
	}
	return nil
}

// maxThumbnailSide bounds a configured thumbnail's width and height.
const maxThumbnailSide = 4096

func (m *MediaConfig) validate() error {
	if m.UserQuota < 0 {
		return keyErr("media.user_quota", "must not be negative (0: no quota)")
	}
	if m.MaxPendingUploads < 1 {
		return keyErr("media.max_pending_uploads", "must be at least 1")
	}
	if m.UnusedExpiry.D() < time.Minute {
		return keyErr("media.unused_expiry", "must be at least 1m")
	}
	if len(m.ThumbnailSizes) == 0 {
		return keyErr("media.thumbnail_sizes", "must list at least one size")
	}
	seen := make(map[ThumbnailSize]int, len(m.ThumbnailSizes))
	for i, s := range m.ThumbnailSizes {
		key := fmt.Sprintf("media.thumbnail_sizes[%d]", i)
		if s.Width < 1 || s.Height < 1 || s.Width > maxThumbnailSide || s.Height > maxThumbnailSide {
			return keyErr(key, "width and height must be between 1 and %d", maxThumbnailSide)
		}
		if s.Method != ThumbnailCrop && s.Method != ThumbnailScale {
			return keyErr(key+".method", "%q must be crop or scale", s.Method)
		}
		if j, dup := seen[s]; dup {
			return keyErr(key, "repeats media.thumbnail_sizes[%d]", j)
		}
		seen[s] = i
	}
	if m.MaxThumbnailPixels < 1 {
		return keyErr("media.max_thumbnail_pixels", "must be at least 1")
	}
	for i, n := range m.URLPreview.AllowedNetworks {
		if _, _, err := net.ParseCIDR(n); err != nil && net.ParseIP(n) == nil {
			return keyErr(fmt.Sprintf("media.url_preview.allowed_networks[%d]", i), "%q is not an IP address or CIDR", n)
		}
	}
	if m.URLPreview.MaxPageSize < 1024 {
		return keyErr("media.url_preview.max_page_size", "must be at least 1024")
	}
	if m.URLPreview.Timeout <= 0 {
		return keyErr("media.url_preview.timeout", "must be positive")
	}
	if m.URLPreview.CacheDuration < 0 {
		return keyErr("media.url_preview.cache_duration", "must not be negative (0: no cache)")
	}
	return nil
}

func (t *TURNConfig) validate() error {
	for i, u := range t.URIs {
		if err := validTURNURI(u); err != nil {
			return keyErr(fmt.Sprintf("turn.uris[%d]", i), "%v", err)
		}
	}
	static := t.Username != "" || t.Password != ""
	switch {
	case t.SharedSecret != "" && static:
		return keyErr("turn.shared_secret", "set either turn.shared_secret (coturn's use-auth-secret) or turn.username and turn.password (fixed credentials), not both")
	case t.SharedSecret != "" && len(t.SharedSecret) < 16:
		return keyErr("turn.shared_secret", "must be at least 16 characters (coturn's static-auth-secret; e.g. openssl rand -hex 32)")
	case t.Username == "" && t.Password != "":
		return keyErr("turn.username", "must be set with turn.password")
	case t.Username != "" && t.Password == "":
		return keyErr("turn.password", "must be set with turn.username")
	case len(t.URIs) > 0 && t.SharedSecret == "" && !static:
		return keyErr("turn.uris", "needs credentials: turn.shared_secret, or turn.username and turn.password")
	case len(t.URIs) == 0 && (t.SharedSecret != "" || static):
		return keyErr("turn.uris", "must list the TURN server (e.g. turn:turn.example.org:3478?transport=udp) when credentials are set")
	}
	if t.UserLifetime.D() < time.Second {
		return keyErr("turn.user_lifetime", "must be at least 1s")
	}
	return nil
}

// validTURNURI checks a turn: or turns: URI (RFC 7065):
// turn[s]:HOST[:PORT][?transport=udp|tcp].
func validTURNURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URI", s)
	}
	if u.Scheme != "turn" && u.Scheme != "turns" {
		return fmt.Errorf("%q must start with turn: or turns:", s)
	}
	if u.Opaque == "" {
		if u.Host != "" {
			return fmt.Errorf("%q must be written %s:HOST[:PORT], without //", s, u.Scheme)
		}
		return fmt.Errorf("%q has no host", s)
	}
	if u.Fragment != "" || strings.ContainsAny(u.Opaque, "/@") {
		return fmt.Errorf("%q must be %s:HOST[:PORT][?transport=udp|tcp]", s, u.Scheme)
	}
	host, port := u.Opaque, ""
	if i := strings.LastIndexByte(host, ':'); i > strings.LastIndexByte(host, ']') {
		host, port = host[:i], host[i+1:]
		if n, err := strconv.Atoi(port); !portRegex.MatchString(port) || err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has an invalid port", s)
		}
	}
	if v6, ok := strings.CutPrefix(host, "["); ok {
		if ip := net.ParseIP(strings.TrimSuffix(v6, "]")); ip == nil || ip.To4() != nil || !strings.HasSuffix(v6, "]") {
			return fmt.Errorf("%q has an invalid IPv6 address", s)
		}
	} else if host == "" || !hostnameRegex.MatchString(host) {
		return fmt.Errorf("%q has an invalid host", s)
	}
	if u.RawQuery != "" || u.ForceQuery {
		q, err := url.ParseQuery(u.RawQuery)
		if t := q["transport"]; err != nil || len(q) != 1 || len(t) != 1 || (t[0] != "udp" && t[0] != "tcp") {
			return fmt.Errorf("%q: the only query allowed is ?transport=udp or ?transport=tcp", s)
		}
	}
	return nil
}

var (
	hostnameRegex = regexp.MustCompile(`^[a-zA-Z0-9.-]+$`)
	portRegex     = regexp.MustCompile(`^[0-9]{1,5}$`)
)

func validHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q must be HOST:PORT", s)
	}
	if host != "" && net.ParseIP(host) == nil && !serverNameRegex.MatchString(host) {
		return fmt.Errorf("%q has an invalid host", s)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", s)
	}
	return nil
}

// ResolvePath makes a config-relative path absolute against the data dir.
func (c *Config) ResolvePath(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.DataDir, p)
}

// ClientBaseURL is what clients are told to use in .well-known.
func (c *Config) ClientBaseURL() string {
	if c.WellKnown.ClientBaseURL != "" {
		return strings.TrimRight(c.WellKnown.ClientBaseURL, "/")
	}
	return strings.TrimRight(c.PublicURL, "/")
}
