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
// defaults, the homeserver it runs beside (homeserverURL reaches it,
// serverName is its name) with the registration in DATA/appservices/ and
// the appservice on any free loopback port (the bridge binds it before the
// homeserver loads registrations), then the irc section's keys, which may
// override any of it. enabled: the section lists networks and does not
// say "enabled: false".
func FromSection(section *yaml.Node, serverName, homeserverURL, dataDir string) (cfg *Config, enabled bool, err error) {
	file := struct {
		Enabled *bool `yaml:"enabled"`
		Config  `yaml:",inline"`
	}{Config: *Defaults()}
	file.ServerName = serverName
	file.HomeserverURL = homeserverURL
	file.Registration = "appservices/irc.yaml"
	file.Listen = "127.0.0.1:0"
	if section != nil && section.Kind != 0 {
		if err := framework.DecodeNode(section, &file); err != nil {
			return nil, false, fmt.Errorf("irc: %w", err)
		}
	}
	file.DataDir = dataDir
	enabled = len(file.Networks) > 0 && (file.Enabled == nil || *file.Enabled)
	if enabled {
		if err := file.Config.Validate(); err != nil {
			return nil, false, fmt.Errorf("irc: %w", err)
		}
	}
	return &file.Config, enabled, nil
}
