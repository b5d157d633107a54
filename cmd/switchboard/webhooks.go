package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/switchboard-im/switchboard/bridges/irc"
	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/webhooks"
)

// cmdWebhooks runs the webhook bridge on its own, against any homeserver:
//
//	switchboard webhooks --config webhooks.yaml                        run it
//	switchboard webhooks --config webhooks.yaml generate-registration  write its registration and exit
//
// The file has the keys of the webhooks section of switchboard.yaml plus
// homeserver_url and server_name (docs/config.md#webhooks); relative paths
// are relative to it.
func cmdWebhooks(args []string, stdout io.Writer) error {
	cfg := webhooks.Defaults()
	return runStandalone("webhooks", args, stdout, cfg, &cfg.Config, func(ctx context.Context, log zerolog.Logger) error {
		svc, err := webhooks.New(ctx, cfg, log)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Webhooks: %s/hooks/…, bot @%s:%s, homeserver %s\n", cfg.PublicURL, cfg.BotLocalpart, cfg.ServerName, cfg.HomeserverURL)
		return svc.Run(ctx)
	})
}

// cmdIRC runs the IRC bridge on its own, against any homeserver:
//
//	switchboard irc --config irc.yaml [generate-registration]
//
// The file has the keys of docs/irc.md plus homeserver_url and server_name.
func cmdIRC(args []string, stdout io.Writer) error {
	cfg := irc.Defaults()
	return runStandalone("irc", args, stdout, cfg, &cfg.Config.Config, func(ctx context.Context, log zerolog.Logger) error {
		br, err := irc.New(ctx, cfg, log)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "IRC bridge: %d networks, bot @%s:%s, homeserver %s\n", len(cfg.Networks), cfg.BotLocalpart, cfg.ServerName, cfg.HomeserverURL)
		return br.Run(ctx)
	})
}

// runStandalone is the command line of a component run on its own: load
// --config FILE (strictly) over the defaults in cfg, validate it, write
// the registration when missing (and stop there for
// generate-registration), else run until SIGINT or SIGTERM.
func runStandalone(name string, args []string, stdout io.Writer, cfg framework.Validator, fw *framework.Config, run func(ctx context.Context, log zerolog.Logger) error) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("config", name+".yaml", "the component's config file")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 || (len(pos) == 1 && pos[0] != "generate-registration") {
		return usagef("expected no argument or generate-registration, got %q", pos)
	}
	if err := framework.LoadConfig(*path, cfg, fw); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	reg, written, err := fw.EnsureRegistration()
	if err != nil {
		return err
	}
	if len(pos) == 1 {
		state := "is up to date"
		if written {
			state = "written"
		}
		fmt.Fprintf(stdout, "Registration %s (id %s): load it into the homeserver, e.g. `switchboard appservice add FILE`.\n", state, reg.ID)
		return nil
	}
	level := os.Getenv("LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	log := newLogger(config.LoggingConfig{Level: level, Format: "pretty"})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, log)
}
