package irc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-im/switchboard/framework"
)

const baseYAML = `
homeserver_url: http://127.0.0.1:8008
server_name: example.org
id: irc
listen: 127.0.0.1:29320
registration: irc-registration.yaml
bot_localpart: ircbot
ghost_prefix: irc_
alias_prefix: irc_
database: sqlite:irc.db
`

func loadYAML(t *testing.T, text string) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "irc.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{}
	if err := framework.LoadConfig(path, cfg, &cfg.Config.Config); err != nil {
		return nil, err
	}
	return cfg, cfg.Validate()
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadYAML(t, baseYAML+`
networks:
  - id: libera
    host: irc.libera.chat
    tls: true
    idle_timeout: 90m
    mappings:
      "#matrix": "!abc:example.org"
      "#keyed": {room: "!def:example.org", key: "s3cret"}
    channels: ["#switchboard"]
`)
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Networks[0]
	checks := []struct {
		what      string
		got, want any
	}{
		{"name", n.Name, "libera"},
		{"port", n.Port, 6697},
		{"bot_nick", n.BotNick, "mxbridge"},
		{"nick_template", n.NickTemplate, "{{.Localpart}}[m]"},
		{"rate_limit", n.RateLimit, RateLimit{LinesPerSecond: 2, Burst: 5}},
		{"connection_rate", n.ConnectionRate, ConnectionRate{PerSecond: 5, Burst: 5}},
		{"idle_timeout", n.IdleTimeout, 90 * time.Minute},
		{"max_lines", n.MaxLines, 5},
		{"netsplit_grace", n.NetsplitGrace, time.Minute},
		{"reconnect", n.Reconnect, Backoff{Min: 2 * time.Second, Max: 5 * time.Minute}},
		{"mappings", n.Mappings["#matrix"], ChannelMapping{Room: "!abc:example.org"}},
		{"mappings with a key", n.Mappings["#keyed"], ChannelMapping{Room: "!def:example.org", Key: "s3cret"}},
		{"media_url", cfg.mediaBase(), "http://127.0.0.1:8008/_matrix/client/v1/media/download"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{``, "networks: must list at least one IRC network"},
		{"networks:\n  - id: Libera\n    host: h", "networks[0].id:"},
		{"networks:\n  - id: a\n    host: h\n  - id: a\n    host: h", `networks[1].id: "a" is the ID of another network`},
		{"networks:\n  - id: a", "networks[0].host:"},
		{"networks:\n  - id: a\n    host: h\n    port: 70000", "networks[0].port:"},
		{"networks:\n  - id: a\n    host: h\n    nick_template: '{{.Nope}}'", "networks[0].nick_template:"},
		{"networks:\n  - id: a\n    host: h\n    nick_template: '{{'", "networks[0].nick_template:"},
		{"networks:\n  - id: a\n    host: h\n    bot_nick: 'bad nick'", "networks[0].bot_nick:"},
		{"networks:\n  - id: a\n    host: h\n    netsplit_grace: -1s", "networks[0].netsplit_grace:"},
		{"networks:\n  - id: a\n    host: h\n    sasl: {account: x}", "networks[0].sasl: needs account and password"},
		{"networks:\n  - id: a\n    host: h\n    mappings: {'#x': 'room'}", "networks[0].mappings:"},
		{"networks:\n  - id: a\n    host: h\n    mappings: {'x': '!r:s'}", "networks[0].mappings:"},
		{"networks:\n  - id: a\n    host: h\n    mappings: {'#x': {room: 'room', key: k}}", "networks[0].mappings: #x: \"room\" is not a room ID"},
		{"networks:\n  - id: a\n    host: h\n    mappings: {'#x': {room: '!r:s', key: 'two words'}}", "networks[0].mappings: #x: the key must have no spaces"},
		{"networks:\n  - id: a\n    host: h\n    mappings: {'#x': {room: '!r:s', keys: k}}", `unknown key "keys" in a channel mapping`},
		{"networks:\n  - id: a\n    host: h\n    mappings: {'#x': ['!r:s']}", "a channel mapping is a room ID or {room: …, key: …}"},
		{"networks:\n  - id: a\n    host: h\n    channels: ['nochan']", "networks[0].channels[0]:"},
		{"networks:\n  - id: a\n    host: h\n    reconnect: {min: 10s, max: 1s}", "networks[0].reconnect: max"},
		{"networks:\n  - id: a\n    host: h\n    max_lines: -1", "networks[0].max_lines:"},
		{"networks:\n  - id: a\n    host: h\nmedia_url: ftp://x", "media_url:"},
	}
	for _, c := range cases {
		_, err := loadYAML(t, baseYAML+c.yaml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.yaml, err, c.want)
		}
	}
	// Strict loading: an unknown key is an error naming it.
	if _, err := loadYAML(t, baseYAML+"networks:\n  - id: a\n    host: h\n    hostname: x"); err == nil || !strings.Contains(err.Error(), "hostname") {
		t.Errorf("unknown key: %v", err)
	}
	// The framework's keys are checked too.
	bad := strings.Replace(baseYAML, "ghost_prefix: irc_", "ghost_prefix: \"\"", 1)
	if _, err := loadYAML(t, bad+"networks:\n  - id: a\n    host: h"); err == nil || !strings.Contains(err.Error(), "ghost_prefix") {
		t.Errorf("no ghost prefix: %v", err)
	}
}

// Channels as users name them, and aliases, resolve to portal IDs folded
// by the network's case mapping.
func TestResolveChannel(t *testing.T) {
	cfg, err := loadYAML(t, baseYAML+"networks:\n  - id: libera\n    host: h\n  - id: oftc\n    host: h2")
	if err != nil {
		t.Fatal(err)
	}
	c := newCore(cfg, zerolog.Nop())
	ctx := context.Background()
	for in, want := range map[string]string{
		"libera/#Go":                          "libera/#go",
		"libera #Go":                          "libera/#go",
		"oftc/#Foo[bar]":                      "oftc/#foo{bar}", // RFC 1459 until the server says otherwise
		"libera/&local":                       "libera/&local",
		"libera/#":                            "",
		"libera/go":                           "",
		"#go":                                 "", // two networks: which?
		"nowhere/#go":                         "",
		"libera/#with space":                  "",
		"libera/dm/bob/@a:b":                  "",
		"libera/#" + strings.Repeat("x", 300): "",
	} {
		info, err := c.ResolveChannel(ctx, in)
		switch {
		case want == "" && err == nil:
			t.Errorf("%q resolved to %s, want an error", in, info.ID)
		case want != "" && (err != nil || info.ID != want):
			t.Errorf("%q: %v, %v; want %s", in, info, err, want)
		}
	}
	if ch, ok := c.ChannelForAlias("libera_#go"); !ok || ch != "libera/#go" {
		t.Errorf("ChannelForAlias = %q, %v", ch, ok)
	}
	if _, ok := c.ChannelForAlias("efnet_#go"); ok {
		t.Errorf("an alias of an unknown network resolved")
	}
	if got := c.AliasForChannel("libera/#go"); got != "libera_#go" {
		t.Errorf("AliasForChannel = %q", got)
	}
}

func TestNicks(t *testing.T) {
	for in, want := range map[string]string{
		"alice":          "alice",
		"alice.smith":    "alice_smith",
		"9lives":         "_9lives",
		"-dash":          "_-dash",
		"Zoë Ünter":      "Zo_nter",
		"a b  c":         "a_b_c",
		"[m]":            "[m]",
		"x/y=z+w":        "x_y_z_w",
		"emoji😀here":     "emoji_here",
		"tab\there":      "tab_here",
		"bracket[]\\`^{": "bracket[]\\`^{",
	} {
		if got := sanitizeNick(in); got != want {
			t.Errorf("sanitizeNick(%q) = %q, want %q", in, got, want)
		}
		if got := sanitizeNick(in); !validNick(got, 0) {
			t.Errorf("sanitizeNick(%q) = %q is not a valid nick", in, got)
		}
	}
	n := &NetworkConfig{ID: "x", Host: "h"}
	if err := n.validate("networks[0]"); err != nil {
		t.Fatal(err)
	}
	data := newUserData("@averyveryverylongname.person:example.org", func() string { return "Long Name" })
	if got := makeNick(n, data, 30); got != "averyveryverylongname_person[m]"[:27]+"[m]" {
		t.Errorf("makeNick, 30 bytes: %q", got)
	}
	if got := makeNick(n, data, 9); !strings.HasSuffix(got, "[m]") || len(got) > 9 {
		t.Errorf("makeNick keeps the suffix within NICKLEN: %q", got)
	}
	if got := makeIdent(n, data); got != "averyveryv" {
		t.Errorf("makeIdent = %q", got)
	}
	n.NickTemplate = "{{.DisplayName}}|m"
	if err := n.validate("networks[0]"); err != nil {
		t.Fatal(err)
	}
	if got := makeNick(n, data, 30); got != "Long_Name|m" {
		t.Errorf("display name template: %q", got)
	}
}

func TestPortalIDs(t *testing.T) {
	if net, ch, nick, user, ok := parsePortalID("libera/#go"); !ok || net != "libera" || ch != "#go" || nick != "" || user != "" {
		t.Errorf("channel: %q %q %q %q %v", net, ch, nick, user, ok)
	}
	if net, ch, nick, user, ok := parsePortalID(dmPortalID("libera", "bob", "@alice:example.org")); !ok || net != "libera" || ch != "" || nick != "bob" || user != "@alice:example.org" {
		t.Errorf("direct chat: %q %q %q %q %v", net, ch, nick, user, ok)
	}
	for _, bad := range []string{"", "libera", "libera/", "libera/dm/bob", "libera/dm//@a:b"} {
		if _, _, _, _, ok := parsePortalID(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestConfigSecretsFromEnvironment: a network's password and SASL
// password may be given in the environment instead of the file.
func TestConfigSecretsFromEnvironment(t *testing.T) {
	const networks = `
networks:
  - id: oftc-net
    host: irc.oftc.net
    password: from-file
    sasl: {account: bridge}
  - id: libera
    host: irc.libera.chat
`
	t.Setenv("SWITCHBOARD_IRC_OFTC_NET_PASSWORD", "server-secret")
	t.Setenv("SWITCHBOARD_IRC_OFTC_NET_SASL_PASSWORD", "sasl-secret")
	cfg, err := loadYAML(t, baseYAML+networks)
	if err != nil {
		t.Fatal(err)
	}
	oftc, libera := cfg.Networks[0], cfg.Networks[1]
	if oftc.Password != "server-secret" || oftc.SASL.Password != "sasl-secret" || oftc.SASL.Account != "bridge" || libera.Password != "" {
		t.Fatalf("oftc password %q, sasl %+v; libera password %q", oftc.Password, oftc.SASL, libera.Password)
	}
	if oftc.EnvPassword() != "SWITCHBOARD_IRC_OFTC_NET_PASSWORD" {
		t.Fatalf("EnvPassword = %s", oftc.EnvPassword())
	}
	// Without the variable, the SASL section misses its password, and the
	// error says where it may come from.
	t.Setenv("SWITCHBOARD_IRC_OFTC_NET_SASL_PASSWORD", "")
	if _, err := loadYAML(t, baseYAML+networks); err == nil || !strings.Contains(err.Error(), "networks[0].sasl") ||
		!strings.Contains(err.Error(), "SWITCHBOARD_IRC_OFTC_NET_SASL_PASSWORD") {
		t.Fatalf("missing SASL password: %v", err)
	}
	// A SASL password for a network without a sasl section is an error.
	t.Setenv("SWITCHBOARD_IRC_LIBERA_SASL_PASSWORD", "x")
	t.Setenv("SWITCHBOARD_IRC_OFTC_NET_SASL_PASSWORD", "sasl-secret")
	if _, err := loadYAML(t, baseYAML+networks); err == nil || !strings.Contains(err.Error(), "networks[1].sasl") {
		t.Fatalf("SASL password without an account: %v", err)
	}
}
