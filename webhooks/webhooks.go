// Package webhooks is Switchboard's webhook bridge: Slack-compatible
// incoming webhooks (and Alertmanager, Grafana, matrix-appservice-webhooks
// and any JSON through a template) that post into Matrix rooms, and
// outgoing webhooks that POST a room's messages to a URL.
//
// It is an appservice on the framework: a bot (@webhooks by default)
// manages hooks with `!webhook` commands in the room they post to, and
// messages appear from ghosts named as the payload asks. A request is
// answered 200 only once its message is stored in the queue
// (webhook_queue); a worker sends the queue to the homeserver in order,
// retrying while it is unreachable, so nothing accepted is lost.
//
//	svc, err := webhooks.New(ctx, cfg, log)
//	return svc.Run(ctx)
package webhooks

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/bot"
)

//go:embed upgrades/*.sql
var upgrades embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgrades, "upgrades").Finish()

// Config is the webhook bridge's config: the appservice's keys (inline)
// and the bridge's own.
type Config struct {
	framework.Config `yaml:",inline"`

	// HooksListen is where callers POST to /hooks/{secret}.
	HooksListen string `yaml:"hooks_listen"`
	// PublicURL is how callers reach HooksListen: the start of the hook
	// URLs the bot hands out. Default http://{hooks_listen}.
	PublicURL string `yaml:"public_url"`
	// MaxBodySize is the largest request body accepted, in bytes (413
	// above). Default 1 MiB.
	MaxBodySize int64 `yaml:"max_body_size"`
	// RateLimits: per hook and for all hooks together (429 with
	// Retry-After above them). per_second 0 turns one off.
	RateLimits struct {
		PerHook RateLimit `yaml:"per_hook"`
		Global  RateLimit `yaml:"global"`
	} `yaml:"rate_limits"`
	// SenderMode is who messages come from: "per_name" (a ghost per hook
	// and sender name the payload gives, with its avatar) or "per_hook"
	// (one ghost per hook, named after it). Default per_name.
	SenderMode string `yaml:"sender_mode"`
	// ResolvedAlerts is how an alert's resolution refers to the message
	// that showed it firing: "reply" (default) or "edit".
	ResolvedAlerts string `yaml:"resolved_alerts"`
	// MinPower is the power level a user needs in a room to manage its
	// hooks. Default 50 (moderator).
	MinPower int `yaml:"min_power"`
	// Provisioning is the HTTP API an integration manager calls (served on
	// hooks_listen under /_switchboard/webhooks/v1/).
	Provisioning struct {
		// SharedSecret: "" accepts users' OpenID tokens only; "disable"
		// turns the API off.
		SharedSecret string `yaml:"shared_secret"`
	} `yaml:"provisioning"`
	Outgoing OutgoingConfig `yaml:"outgoing"`

	// publicURLFromListen: PublicURL was derived from HooksListen (Bind
	// corrects its port when that is 0).
	publicURLFromListen bool
}

// RateLimit is a token bucket: per_second on average, burst at once.
type RateLimit struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// OutgoingConfig configures outgoing webhooks.
type OutgoingConfig struct {
	// Timeout of one POST to a receiver. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxAttempts before a delivery goes to the dead-letter table.
	// Default 8 (backoff 1s doubling: about 4 minutes).
	MaxAttempts int `yaml:"max_attempts"`
	// AllowPrivateTargets lets outgoing hooks POST to loopback, private
	// and link-local addresses. Off by default: a room moderator must not
	// be able to make the bridge probe the operator's network.
	AllowPrivateTargets bool `yaml:"allow_private_targets"`
}

// Validate checks the config and fills in defaults; errors name the key.
func (c *Config) Validate() error {
	errs := []error{c.Config.Validate()}
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.HooksListen); err != nil {
		bad("hooks_listen", "must be host:port, got %q", c.HooksListen)
	}
	if (c.PublicURL == "" || c.publicURLFromListen) && c.HooksListen != "" {
		c.PublicURL = "http://" + c.HooksListen
		c.publicURLFromListen = true
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("public_url", "must be an http(s) URL, got %q", c.PublicURL)
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	if c.MaxBodySize == 0 {
		c.MaxBodySize = 1 << 20
	} else if c.MaxBodySize < 1024 {
		bad("max_body_size", "must be at least 1024 bytes")
	}
	for key, rl := range map[string]RateLimit{"rate_limits.per_hook": c.RateLimits.PerHook, "rate_limits.global": c.RateLimits.Global} {
		if rl.PerSecond < 0 || rl.Burst < 0 {
			bad(key, "per_second and burst must not be negative")
		}
	}
	switch c.SenderMode {
	case "":
		c.SenderMode = "per_name"
	case "per_name", "per_hook":
	default:
		bad("sender_mode", "must be per_name or per_hook, got %q", c.SenderMode)
	}
	switch c.ResolvedAlerts {
	case "":
		c.ResolvedAlerts = "reply"
	case "reply", "edit":
	default:
		bad("resolved_alerts", "must be reply or edit, got %q", c.ResolvedAlerts)
	}
	if c.MinPower == 0 {
		c.MinPower = 50
	}
	if c.Outgoing.Timeout == 0 {
		c.Outgoing.Timeout = 10 * time.Second
	}
	if c.Outgoing.MaxAttempts == 0 {
		c.Outgoing.MaxAttempts = 8
	}
	if c.GhostPrefix == "" {
		bad("ghost_prefix", "must be set: webhook senders are ghosts")
	}
	return errors.Join(errs...)
}

// DefaultRateLimits are the limits `switchboard init` writes: a noisy
// alert source gets 10 messages a second (30 at once); all hooks together
// 200 a second (1,000 at once).
var DefaultRateLimits = struct{ PerHook, Global RateLimit }{
	PerHook: RateLimit{PerSecond: 10, Burst: 30},
	Global:  RateLimit{PerSecond: 200, Burst: 1000},
}

// Service is a running webhook bridge.
type Service struct {
	Config *Config
	AS     *framework.Appservice
	Bot    *bot.Bot
	DB     *dbutil.Database
	Log    zerolog.Logger

	auth     *framework.ProvisioningAuth
	global   *framework.Limiter
	limitsMu sync.Mutex
	perHook  map[string]*hookLimiter

	wake       chan struct{}   // a message was queued
	writes     chan queueWrite // accepted messages for the queue writer
	writerStop chan struct{}
	writerWG   sync.WaitGroup
	hooksLn    net.Listener
	server     *http.Server
	serveErr   chan error
	stopWork   context.CancelFunc
	workers    sync.WaitGroup

	outgoing *outgoing
	stopOnce sync.Once
}

type hookLimiter struct {
	*framework.Limiter
	lastUsed time.Time
}

// New creates the webhook bridge's appservice, bot and tables. Nothing
// listens until Start.
func New(ctx context.Context, cfg *Config, log zerolog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	b, err := bot.New(ctx, &cfg.Config, log)
	if err != nil {
		return nil, err
	}
	db := b.AS.DB.Child("webhooks_version", upgradeTable, dbutil.ZeroLogger(log.With().Str("component", "webhooks_db").Logger()))
	if err := db.Upgrade(ctx); err != nil {
		b.Stop()
		return nil, fmt.Errorf("database: upgrade webhook schema: %w", err)
	}
	s := &Service{
		Config:     cfg,
		AS:         b.AS,
		Bot:        b,
		DB:         db,
		Log:        log,
		auth:       framework.NewProvisioningAuth(cfg.Provisioning.SharedSecret, &cfg.Config),
		global:     framework.NewLimiter(cfg.RateLimits.Global.PerSecond, cfg.RateLimits.Global.Burst),
		perHook:    map[string]*hookLimiter{},
		wake:       make(chan struct{}, 1),
		writes:     make(chan queueWrite, maxGroupCommit),
		writerStop: make(chan struct{}),
	}
	// Anyone on the homeserver may invite the bot; what it does in a room
	// is limited by the room's power levels.
	b.InvitePolicy = bot.AcceptFromServers(cfg.ServerName)
	s.registerCommands()
	s.outgoing = newOutgoing(s)
	b.AS.OnEvent(s.outgoing.handleEvent)
	return s, nil
}

// Bind opens the hook listener and the appservice's ahead of Start. A
// port 0 takes a free port, and the public URL (when derived from
// hooks_listen) and the registration follow it; `switchboard run` binds
// before the homeserver loads the registration.
func (s *Service) Bind() error {
	if s.hooksLn != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.Config.HooksListen)
	if err != nil {
		return fmt.Errorf("hooks_listen: %w", err)
	}
	if s.Config.publicURLFromListen {
		s.Config.PublicURL = "http://" + ln.Addr().String()
	}
	if _, err := s.AS.Bind(); err != nil {
		ln.Close()
		return err
	}
	s.hooksLn = ln
	return nil
}

// Start starts the appservice, the hook listener and the delivery
// workers.
func (s *Service) Start(ctx context.Context) error {
	if err := s.Bind(); err != nil {
		return err
	}
	ln := s.hooksLn
	if err := s.Bot.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	s.writerWG.Add(1)
	go func() { defer s.writerWG.Done(); s.queueWriter() }()
	s.server = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- s.server.Serve(ln) }()
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopWork = cancel
	s.workers.Add(2)
	go func() { defer s.workers.Done(); s.deliverLoop(work) }()
	go func() { defer s.workers.Done(); s.outgoing.loop(work) }()
	s.Log.Info().Str("hooks_listen", ln.Addr().String()).Str("public_url", s.Config.PublicURL).Msg("Webhooks started")
	return nil
}

// Stop stops accepting requests (those being answered complete), stops
// the workers (what is queued stays queued) and the appservice. Calls
// after the first do nothing.
func (s *Service) Stop() { s.stopOnce.Do(s.stop) }

func (s *Service) stop() {
	if s.server == nil && s.hooksLn != nil {
		s.hooksLn.Close() // bound, never started
	}
	if s.server != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = s.server.Shutdown(ctx)
		cancel()
		// The writer commits what it was handed and stops; a request still
		// running after the shutdown timeout is refused, not lost.
		close(s.writerStop)
		s.writerWG.Wait()
		s.stopWork()
		s.workers.Wait()
	}
	s.Bot.Stop()
}

// Run runs the bridge until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-s.serveErr:
		s.Stop()
		return fmt.Errorf("hooks listener: %w", err)
	}
	s.Stop()
	return nil
}

// HookURL is the URL callers POST to for a hook secret.
func (s *Service) HookURL(token string) string { return s.Config.PublicURL + "/hooks/" + token }

// ghostFor is the ghost that posts a hook's message from sender name
// (per_name mode) or for the whole hook.
func (s *Service) ghostFor(hookID, senderName string) id.UserID {
	if s.Config.SenderMode == "per_hook" || senderName == "" {
		return s.Config.GhostID(hookID)
	}
	name := strings.ToLower(senderName)
	userID := s.Config.GhostID(hookID + "_" + name)
	if len(userID) > 255 {
		// A user ID is at most 255 bytes, and escaping can triple a name's:
		// a long name gets a ghost named by its hash (its display name is
		// still the name).
		sum := sha256.Sum256([]byte(name))
		userID = s.Config.GhostID(hookID + "_" + hex.EncodeToString(sum[:12]))
	}
	return userID
}
