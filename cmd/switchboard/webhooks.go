package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

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
	fs := flag.NewFlagSet("webhooks", flag.ContinueOnError)
	path := fs.String("config", "webhooks.yaml", "the webhook bridge's config file")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 || (len(pos) == 1 && pos[0] != "generate-registration") {
		return usagef("expected no argument or generate-registration, got %q", pos)
	}
	cfg := webhooks.Defaults()
	if err := framework.LoadConfig(*path, cfg, &cfg.Config); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	reg, written, err := cfg.EnsureRegistration()
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
	svc, err := webhooks.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Webhooks: %s/hooks/…, bot @%s:%s, homeserver %s\n", cfg.PublicURL, cfg.BotLocalpart, cfg.ServerName, cfg.HomeserverURL)
	return svc.Run(ctx)
}
