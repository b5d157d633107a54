package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultRendersAndParses(t *testing.T) {
	cfg := Default()
	cfg.Registration.SharedSecret = RandomSecret(32)
	data, err := cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatalf("generated config does not parse: %v\n%s", err, data)
	}
	if back.Registration.SharedSecret != cfg.Registration.SharedSecret || back.Listen != "127.0.0.1:8008" ||
		back.ServerName != "localhost" || back.Database != "sqlite:switchboard.db" {
		t.Fatalf("round trip changed values: %+v", back)
	}
}

func TestEmptyFileGivesDefaults(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil || cfg.Listen != Default().Listen {
		t.Fatalf("empty config: %+v, %v", cfg, err)
	}
}

func TestValidationNamesTheKey(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{"bogus: 1", `unknown key "bogus"`},
		{"registration:\n  nope: true", `unknown key "nope"`},
		{"server_name: 'bad name!'", "server_name"},
		{"public_url: ftp://x", "public_url"},
		{"listen: nonsense", "listen"},
		{"database: mysql://x", "database"},
		{"database_max_conns: -1", "database_max_conns"},
		{"registration: {mode: bogus}", "registration.mode"},
		{"registration: {shared_secret: short}", "registration.shared_secret"},
		{"auth: {access_token_lifetime: 1s}", "auth.access_token_lifetime"},
		{"auth: {access_token_lifetime: soon}", "auth.access_token_lifetime (line 1): invalid duration"},
		{"http:\n  read_timeout: [1]", "http.read_timeout (line 2)"},
		{"auth: {password_hashing: {memory_kib: 1}}", "auth.password_hashing"},
		{"rate_limits: {login: {per_second: 1, burst: 0}}", "rate_limits.login"},
		{"http: {max_body_bytes: 10}", "http.max_body_bytes"},
		{"http: {trusted_proxies: [not-an-ip]}", "http.trusted_proxies[0]"},
		{"well_known: {client_base_url: '/relative'}", "well_known.client_base_url"},
		{"metrics: {enabled: true, listen: nope}", "metrics.listen"},
		{"logging: {level: loud}", "logging.level"},
		{"logging: {format: xml}", "logging.format"},
		{"listen: [1, 2]", "listen"},
		{"{{{", "did not find expected"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%q: want an error naming %q, got %v", tc.yaml, tc.key, err)
		}
	}
}

func TestEnvOverridesSecrets(t *testing.T) {
	t.Setenv(EnvSharedSecret, "from-the-environment-0123456789")
	t.Setenv(EnvDatabase, "postgres://u@127.0.0.1/db")
	cfg, err := Parse([]byte("registration: {shared_secret: from-the-file-0123456789}"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Registration.SharedSecret != "from-the-environment-0123456789" || cfg.Database != "postgres://u@127.0.0.1/db" {
		t.Fatalf("env not applied: %+v", cfg)
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, Default()); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(Path(dir))
	key, _ := os.ReadFile(filepath.Join(dir, "signing.key"))
	if err := Init(dir, Default()); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v", err)
	}
	second, _ := os.ReadFile(Path(dir))
	key2, _ := os.ReadFile(filepath.Join(dir, "signing.key"))
	if string(first) != string(second) || string(key) != string(key2) {
		t.Fatal("second init changed files")
	}
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Registration.SharedSecret) < 40 {
		t.Fatalf("generated shared secret too short: %d chars", len(cfg.Registration.SharedSecret))
	}
	if _, err := LoadSigningKey(cfg.ResolvePath(cfg.SigningKeyPath)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{FileName, "signing.key"} {
		if st, _ := os.Stat(filepath.Join(dir, name)); st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
	}
}
