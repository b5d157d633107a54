package framework_test

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/switchboard-im/switchboard/framework"
)

// TestApplyRunSection: a component's section of switchboard.yaml goes over
// its defaults and the homeserver's settings; "enabled" is the caller's;
// unknown keys are errors naming the section.
func TestApplyRunSection(t *testing.T) {
	type compConfig struct {
		framework.Config `yaml:",inline"`
		Extra            string `yaml:"extra"`
	}
	parse := func(src string) *yaml.Node {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		return doc.Content[0]
	}
	cfg := &compConfig{Extra: "default", Config: framework.Config{BotLocalpart: "bot", Database: "sqlite:x.db"}}
	section := parse("enabled: false\nextra: set\nbot_localpart: other\n")
	enabled, err := framework.ApplyRunSection(section, cfg, &cfg.Config, "comp", "example.org", "http://127.0.0.1:8008", "/data")
	if err != nil {
		t.Fatal(err)
	}
	if enabled == nil || *enabled {
		t.Errorf("enabled = %v, want false", enabled)
	}
	if cfg.Extra != "set" || cfg.BotLocalpart != "other" || cfg.Database != "sqlite:x.db" || cfg.ServerName != "example.org" ||
		cfg.HomeserverURL != "http://127.0.0.1:8008" || cfg.Registration != "appservices/comp.yaml" || cfg.Listen != "127.0.0.1:0" || cfg.DataDir != "/data" {
		t.Errorf("config after the section: %+v", cfg)
	}
	if len(section.Content) != 6 {
		t.Errorf("the caller's node lost its keys: %d nodes", len(section.Content))
	}
	if enabled, err := framework.ApplyRunSection(nil, cfg, &cfg.Config, "comp", "example.org", "http://x", "/data"); err != nil || enabled != nil {
		t.Errorf("no section: %v, %v", enabled, err)
	}
	_, err = framework.ApplyRunSection(parse("extr: typo\n"), cfg, &cfg.Config, "comp", "example.org", "http://x", "/data")
	if err == nil || !strings.Contains(err.Error(), "comp") || !strings.Contains(err.Error(), "extr") {
		t.Errorf("unknown key: %v", err)
	}
}
