package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/switchboard-im/switchboard/bridges/irc"
	"github.com/switchboard-im/switchboard/homeserver"
	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/internal/buildinfo"
	"github.com/switchboard-im/switchboard/internal/dbopen"
	"github.com/switchboard-im/switchboard/webhooks"
)

func cmdVersion(_ []string, stdout io.Writer) error {
	fmt.Fprintln(stdout, buildinfo.String())
	return nil
}

func cmdInit(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	data := fs.String("data", "", "data directory to create (required)")
	def := config.Default()
	serverName := fs.String("server-name", def.ServerName, "Matrix server name (the part after ':' in user IDs)")
	listen := fs.String("listen", def.Listen, "HOST:PORT for the client-server API")
	publicURL := fs.String("public-url", "", "URL clients use to reach the server (default http://LISTEN)")
	database := fs.String("database", def.Database, "sqlite:FILE or postgres://… URI")
	hooksListen := fs.String("hooks-listen", def.WebhooksListen, "HOST:PORT where the webhook bridge takes hook requests (port 0: any free port)")
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *data == "" {
		return usagef("--data DIR is required")
	}
	cfg := def
	cfg.ServerName, cfg.Listen, cfg.Database, cfg.WebhooksListen = *serverName, *listen, *database, *hooksListen
	cfg.PublicURL = *publicURL
	if cfg.PublicURL == "" {
		cfg.PublicURL = defaultPublicURL(cfg.Listen)
	}
	if err := config.Init(*data, cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote %s and the signing key. Start with: switchboard run --data %s\n", config.Path(*data), *data)
	return nil
}

// defaultPublicURL derives a URL a local client can use from the listen
// address; a wildcard host (0.0.0.0, ::, empty) is not one.
func defaultPublicURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// loadOrInit loads the config, writing defaults first if there is none.
func loadOrInit(dataDir string, stdout io.Writer) (*config.Config, error) {
	if _, err := os.Stat(config.Path(dataDir)); errors.Is(err, os.ErrNotExist) {
		if err := config.Init(dataDir, config.Default()); err != nil {
			return nil, err
		}
		fmt.Fprintf(stdout, "First start: wrote %s with defaults (edit it and restart to change them).\n", config.Path(dataDir))
	}
	return config.Load(dataDir)
}

func newLogger(cfg config.LoggingConfig) zerolog.Logger {
	level, _ := zerolog.ParseLevel(cfg.Level)
	var w io.Writer = os.Stderr
	if cfg.Format == "pretty" {
		w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.DateTime, NoColor: !term.IsTerminal(int(os.Stderr.Fd()))}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

func cmdRun(args []string, stdout io.Writer) error {
	return serve("run", args, stdout)
}

func cmdHomeserver(args []string, stdout io.Writer) error {
	return serve("homeserver", args, stdout)
}

// serve starts the components: the homeserver, and for "run" the webhook
// bridge (unless webhooks.enabled is false) and the IRC bridge (when the
// irc section lists networks); the Slack bridge and the integration
// manager join "run" as they land.
func serve(name string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	data := dataFlag(fs)
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	cfg, err := loadOrInit(*data, stdout)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Logging)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The webhook bridge binds its ports and writes its registration into
	// DATA/appservices/ before the homeserver starts, which loads it there.
	var hooks *webhooks.Service
	if name == "run" {
		hooksCfg, enabled, err := webhooks.FromSection(&cfg.Webhooks, cfg.ServerName, defaultPublicURL(cfg.Listen), cfg.DataDir)
		if err != nil {
			return fmt.Errorf("%s: %w", config.Path(*data), err)
		}
		if enabled {
			if hooks, err = webhooks.New(ctx, hooksCfg, log.With().Str("component", "webhooks").Logger()); err != nil {
				return err
			}
			defer hooks.Stop()
			if err := hooks.Bind(); err != nil {
				return fmt.Errorf("webhooks: %w", err)
			}
		}
	}

	var ircBridge *irc.Bridge
	if name == "run" {
		ircCfg, enabled, err := irc.FromSection(&cfg.IRC, cfg.ServerName, defaultPublicURL(cfg.Listen), cfg.DataDir)
		if err != nil {
			return fmt.Errorf("%s: %w", config.Path(*data), err)
		}
		if enabled {
			if ircBridge, err = irc.New(ctx, ircCfg, log.With().Str("component", "irc").Logger()); err != nil {
				return err
			}
			defer ircBridge.Stop()
			if err := ircBridge.Bind(); err != nil {
				return fmt.Errorf("irc: %w", err)
			}
		}
	}

	hs, err := homeserver.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	// SIGHUP reloads the appservice registrations; a bad set is reported
	// and the running one stays.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := hs.ReloadAppservices(ctx); err != nil {
					log.Error().Err(err).Msg("Appservice registrations not reloaded")
				} else {
					log.Info().Msg("Appservice registrations reloaded")
				}
			}
		}
	}()
	// Bind before announcing, so the banner never names a port we lack.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		hs.Notifier.Close()
		hs.DB.Close()
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Fprintf(stdout, `
%s
  Homeserver:   %s  (server name %q, listening on %s)
  Config:       %s
  Database:     %s
%s
Create your first admin user (works while the server runs):
  %s user add --data %s --admin YOURNAME

Then log in from any Matrix client with homeserver %s.
Stop with Ctrl-C.

`, buildinfo.String(), cfg.PublicURL, cfg.ServerName, cfg.Listen, config.Path(*data), describeDatabase(cfg.Database),
		describeWebhooks(hooks)+describeIRC(ircBridge), os.Args[0], *data, cfg.PublicURL)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ctx, ln) }()
	if hooks != nil {
		// The bot registers itself once the homeserver answers (retrying).
		if err := hooks.Start(ctx); err != nil {
			stop()
			<-served
			return fmt.Errorf("webhooks: %w", err)
		}
	}
	if ircBridge != nil {
		if err := ircBridge.Start(ctx); err != nil {
			stop()
			<-served
			return fmt.Errorf("irc: %w", err)
		}
	}
	select {
	case <-ctx.Done():
		// The bridges stop before the homeserver: what they were sending
		// is sent or stays queued.
		if hooks != nil {
			hooks.Stop()
		}
		if ircBridge != nil {
			ircBridge.Stop()
		}
		err = <-served
	case err = <-served: // the homeserver failed; the deferred Stop stops the bridge
	}
	log.Info().Msg("Stopped")
	return err
}

func describeIRC(b *irc.Bridge) string {
	if b == nil {
		return ""
	}
	names := make([]string, len(b.Config.Networks))
	for i, n := range b.Config.Networks {
		names[i] = n.ID
	}
	return fmt.Sprintf("  IRC:          %s  (join #%s{network}_{#channel}:%s)\n", strings.Join(names, ", "), b.Config.AliasPrefix, b.Config.ServerName)
}

func describeWebhooks(s *webhooks.Service) string {
	if s == nil {
		return ""
	}
	c := s.Config
	return fmt.Sprintf("  Webhooks:     %s/hooks/…  (invite @%s:%s to a room, then \"!webhook new NAME\")\n", c.PublicURL, c.BotLocalpart, c.ServerName)
}

func describeDatabase(uri string) string {
	dialect, _, _ := dbopen.Split(uri)
	if dialect == "sqlite3" {
		return uri
	}
	return "PostgreSQL"
}
