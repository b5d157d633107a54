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
// defaults, the homeserver it runs beside (homeserverURL reaches it
// directly, serverName is its name) with the registration in
// DATA/appservices/ (where the homeserver loads it), and then the keys of
// the webhooks section of switchboard.yaml, which may override any of it.
// enabled is the section's "enabled" (default true).
func FromSection(section *yaml.Node, serverName, homeserverURL, dataDir string) (cfg *Config, enabled bool, err error) {
	file := struct {
		Enabled *bool `yaml:"enabled"`
		Config  `yaml:",inline"`
	}{Config: *Defaults()}
	file.ServerName = serverName
	file.HomeserverURL = homeserverURL
	file.Registration = "appservices/webhooks.yaml"
	// Any free port: `switchboard run` binds it (Service.Bind) and updates
	// the registration before its homeserver loads registrations.
	file.Listen = "127.0.0.1:0"
	file.DataDir = dataDir
	if section != nil && section.Kind != 0 {
		if err := framework.DecodeNode(section, &file); err != nil {
			return nil, false, fmt.Errorf("webhooks: %w", err)
		}
	}
	file.DataDir = dataDir
	enabled = file.Enabled == nil || *file.Enabled
	if enabled {
		if err := file.Config.Validate(); err != nil {
			return nil, false, fmt.Errorf("webhooks: %w", err)
		}
	}
	return &file.Config, enabled, nil
}
