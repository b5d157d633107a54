package webhooks

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/switchboard-im/switchboard/framework"
)

// Defaults is the config before a file's keys are applied: what
// `switchboard webhooks` and `switchboard run` use for keys left unset.
func Defaults() *Config {
	c := &Config{}
	c.ID = "webhooks"
	c.Listen = "127.0.0.1:29330"
	c.Registration = "webhooks-registration.yaml"
	c.BotLocalpart = "webhooks"
	c.BotDisplayName = "Webhooks"
	c.GhostPrefix = "_webhook_"
	c.Database = "sqlite:webhooks.db"
	c.HooksListen = "127.0.0.1:8009"
	c.RateLimits.PerHook = DefaultRateLimits.PerHook
	c.RateLimits.Global = DefaultRateLimits.Global
	return c
}

// FromSection is the config of the bridge `switchboard run` starts: the
// defaults, then what framework.ApplyRunSection puts over them (the
// homeserver beside it, and the webhooks section of switchboard.yaml).
// enabled is the section's "enabled" (default true).
func FromSection(section *yaml.Node, serverName, homeserverURL, dataDir string) (cfg *Config, enabled bool, err error) {
	cfg = Defaults()
	on, err := framework.ApplyRunSection(section, cfg, &cfg.Config, "webhooks", serverName, homeserverURL, dataDir)
	if err != nil {
		return nil, false, err
	}
	if enabled = on == nil || *on; enabled {
		if err := cfg.Validate(); err != nil {
			return nil, false, fmt.Errorf("webhooks: %w", err)
		}
	}
	return cfg, enabled, nil
}
