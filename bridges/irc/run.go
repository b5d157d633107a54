package irc

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/switchboard-im/switchboard/framework"
)

// Defaults is the config before a file's keys are applied: what
// `switchboard irc` and `switchboard run` use for keys left unset.
func Defaults() *Config {
	c := &Config{}
	c.ID = "irc"
	c.Listen = "127.0.0.1:29331"
	c.Registration = "irc-registration.yaml"
	c.BotLocalpart = "ircbot"
	c.BotDisplayName = "IRC bridge"
	c.GhostPrefix = "irc_"
	c.AliasPrefix = "irc_"
	c.Database = "sqlite:irc.db"
	return c
}

// FromSection is the config of the bridge `switchboard run` starts: the
// defaults, then what framework.ApplyRunSection puts over them (the
// homeserver beside it, and the irc section of switchboard.yaml). enabled:
// the section lists networks and does not say "enabled: false".
func FromSection(section *yaml.Node, serverName, homeserverURL, dataDir string) (cfg *Config, enabled bool, err error) {
	cfg = Defaults()
	on, err := framework.ApplyRunSection(section, cfg, &cfg.Config.Config, "irc", serverName, homeserverURL, dataDir)
	if err != nil {
		return nil, false, err
	}
	if enabled = len(cfg.Networks) > 0 && (on == nil || *on); enabled {
		if err := cfg.Validate(); err != nil {
			return nil, false, fmt.Errorf("irc: %w", err)
		}
	}
	return cfg, enabled, nil
}
