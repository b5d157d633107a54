package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	r := sb(t, "version")
	want := "switchboard " + testVersion + " (commit "
	if r.code != 0 || !strings.HasPrefix(r.stdout, want) || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("want exit 0 and one line starting %q, got %s", want, r)
	}
}

func TestUsageAndExitCodes(t *testing.T) {
	t.Parallel()
	commandNames := []string{"init", "run", "homeserver", "user", "registration-token", "version"}
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name      string
		args      []string
		code      int
		stderr    []string // all must appear
		withUsage bool     // stderr lists every command
	}{
		{name: "no arguments", args: nil, code: 2, withUsage: true},
		{name: "help", args: []string{"help"}, code: 0, withUsage: true},
		{name: "--help", args: []string{"--help"}, code: 0, withUsage: true},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2,
			stderr: []string{`unknown command "frobnicate"`}, withUsage: true},
		{name: "unknown flag", args: []string{"run", "--frobnicate"}, code: 2,
			stderr: []string{"switchboard run:", "flag provided but not defined: -frobnicate"}},
		{name: "run extra argument", args: []string{"run", "--data", missing, "extra"}, code: 2,
			stderr: []string{`unexpected argument "extra"`}},
		{name: "run -h", args: []string{"run", "-h"}, code: 0, stderr: []string{"-data"}},
		{name: "init -h", args: []string{"init", "-h"}, code: 0,
			stderr: []string{"-data", "-server-name", "-listen", "-public-url", "-database"}},
		{name: "init without --data", args: []string{"init"}, code: 2, stderr: []string{"--data DIR is required"}},
		{name: "user without subcommand", args: []string{"user"}, code: 2,
			stderr: []string{"add, list, deactivate, reset-password"}},
		{name: "user unknown subcommand", args: []string{"user", "remove", "alice"}, code: 2,
			stderr: []string{`unknown subcommand "remove"`}},
		{name: "user add without name", args: []string{"user", "add", "--data", missing}, code: 2,
			stderr: []string{"expected exactly one user name"}},
		{name: "user add two names", args: []string{"user", "add", "--data", missing, "alice", "bob"}, code: 2,
			stderr: []string{"expected exactly one user name"}},
		{name: "registration-token without subcommand", args: []string{"registration-token"}, code: 2,
			stderr: []string{"create, list, delete"}},
		{name: "registration-token unknown subcommand", args: []string{"registration-token", "revoke", "--data", missing}, code: 2,
			stderr: []string{`unknown subcommand "revoke"`}},
		{name: "registration-token bad --uses", args: []string{"registration-token", "create", "--uses", "many"}, code: 2,
			stderr: []string{"-uses"}},
		// Admin commands never create a data dir: that is init's and run's job.
		{name: "user list without config", args: []string{"user", "list", "--data", missing}, code: 1,
			stderr: []string{"switchboard user:", filepath.Join(missing, "switchboard.yaml"), "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := sb(t, tc.args...)
			if r.code != tc.code {
				t.Fatalf("want exit %d, got %s", tc.code, r)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r)
				}
			}
			if tc.withUsage {
				if !strings.Contains(r.stderr, "Usage: switchboard COMMAND") {
					t.Errorf("no usage on stderr:\n%s", r)
				}
				for _, c := range commandNames {
					if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(c) + ` `).MatchString(r.stderr) {
						t.Errorf("usage does not list %q:\n%s", c, r.stderr)
					}
				}
			}
		})
	}
	t.Cleanup(func() { // after the parallel subtests
		if fileExists(missing) {
			t.Errorf("a command that failed created the data dir %s", missing)
		}
	})
}

// TestInit checks what init writes, independent of the database (the
// lifecycle test repeats the basics on SQLite and PostgreSQL).
func TestInit(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dataA, dataB := filepath.Join(base, "a"), filepath.Join(base, "b")

	out := mustSB(t, cliOpts{}, "init", "--data", dataA)
	if !strings.Contains(out, filepath.Join(dataA, "switchboard.yaml")) || !strings.Contains(out, "switchboard run --data "+dataA) {
		t.Errorf("init does not say what it wrote and how to start:\n%s", out)
	}
	checkInitFiles(t, dataA, map[string]string{
		"server_name": "localhost",
		"listen":      "127.0.0.1:8008",
		"public_url":  "http://127.0.0.1:8008",
		"database":    "sqlite:switchboard.db",
	})

	mustSB(t, cliOpts{}, "init", "--data", dataB, "--server-name", "chat.example.org", "--listen", "0.0.0.0:8448",
		"--public-url", "https://matrix.example.org", "--database", "postgres://sb:pw@db.example.org/sb?sslmode=disable")
	checkInitFiles(t, dataB, map[string]string{
		"server_name": "chat.example.org",
		"listen":      "0.0.0.0:8448",
		"public_url":  "https://matrix.example.org",
		"database":    "postgres://sb:pw@db.example.org/sb?sslmode=disable",
	})

	// Secrets are generated per data dir, not constants.
	if secretOf(t, dataA) == secretOf(t, dataB) {
		t.Errorf("two inits generated the same registration.shared_secret")
	}
	if bytes.Equal(readFile(t, filepath.Join(dataA, "signing.key")), readFile(t, filepath.Join(dataB, "signing.key"))) {
		t.Errorf("two inits generated the same signing key")
	}

	// A second init refuses and leaves everything as it was.
	cfgBefore := readFile(t, filepath.Join(dataA, "switchboard.yaml"))
	keyBefore := readFile(t, filepath.Join(dataA, "signing.key"))
	r := sb(t, "init", "--data", dataA, "--server-name", "other.example.org")
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") || !strings.Contains(r.stderr, filepath.Join(dataA, "switchboard.yaml")) {
		t.Errorf("second init: want exit 1 saying the config already exists, got %s", r)
	}
	if !bytes.Equal(cfgBefore, readFile(t, filepath.Join(dataA, "switchboard.yaml"))) {
		t.Errorf("second init changed switchboard.yaml")
	}
	if !bytes.Equal(keyBefore, readFile(t, filepath.Join(dataA, "signing.key"))) {
		t.Errorf("second init changed signing.key")
	}

	// Invalid flag values are refused before anything is written.
	for _, tc := range []struct {
		flag, value, key string
	}{
		{"--server-name", "bad name!", "server_name"},
		{"--listen", "nonsense", "listen"},
		{"--public-url", "matrix.example.org", "public_url"},
		{"--database", "mysql://x", "database"},
	} {
		dir := filepath.Join(base, "bad"+tc.key)
		r := sb(t, "init", "--data", dir, tc.flag, tc.value)
		if r.code != 1 || !strings.Contains(r.stderr, tc.key+": ") || !strings.Contains(r.stderr, tc.value) {
			t.Errorf("init %s %q: want exit 1 naming %s and the value, got %s", tc.flag, tc.value, tc.key, r)
		}
		if fileExists(dir) {
			t.Errorf("init %s %q failed but created %s", tc.flag, tc.value, dir)
		}
	}
}

// checkInitFiles checks a freshly initialised data dir: permissions, the
// given top-level values, a strong generated secret, a signing key, and a
// comment for every key.
func checkInitFiles(t *testing.T, dataDir string, want map[string]string) {
	t.Helper()
	cfgPath := filepath.Join(dataDir, "switchboard.yaml")
	for path, mode := range map[string]os.FileMode{
		dataDir:                               0o700 | os.ModeDir,
		cfgPath:                               0o600,
		filepath.Join(dataDir, "signing.key"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("init did not write %s: %v", path, err)
			continue
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}
	var values map[string]any
	if err := yaml.Unmarshal(readFile(t, cfgPath), &values); err != nil {
		t.Fatalf("%s does not parse: %v", cfgPath, err)
	}
	for k, v := range want {
		if values[k] != v {
			t.Errorf("%s: %s is %v, want %q", cfgPath, k, values[k], v)
		}
	}
	if s := secretOf(t, dataDir); len(s) < 32 {
		t.Errorf("registration.shared_secret %q is shorter than 32 characters", s)
	}
	key := string(readFile(t, filepath.Join(dataDir, "signing.key")))
	if !regexp.MustCompile(`^ed25519 \S+ \S{40,}\n?$`).MatchString(key) {
		t.Errorf("signing.key is not a Synapse-format ed25519 key: %q", key)
	}
	checkEveryKeyCommented(t, cfgPath)
}

func secretOf(t *testing.T, dataDir string) string {
	t.Helper()
	var cfg struct {
		Registration struct {
			SharedSecret string `yaml:"shared_secret"`
		} `yaml:"registration"`
	}
	if err := yaml.Unmarshal(readFile(t, filepath.Join(dataDir, "switchboard.yaml")), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Registration.SharedSecret
}

// checkEveryKeyCommented asserts that an operator reading the file finds
// every key explained. A key counts as explained when
//   - a comment line sits directly above it (its head comment), or
//   - it opens a section whose first line inside is a comment, or
//   - it cannot carry its own comment (a key of a one-line {…} mapping) and
//     the comment above its section names it.
func checkEveryKeyCommented(t *testing.T, path string) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(readFile(t, path), &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		t.Fatalf("%s: not a YAML mapping", path)
	}
	var undocumented []string
	var walk func(m *yaml.Node, prefix string, sectionComments []string)
	walk = func(m *yaml.Node, prefix string, sectionComments []string) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			key, value := m.Content[i], m.Content[i+1]
			name := prefix + key.Value
			comment := key.HeadComment
			if i == 0 && prefix == "" && comment == "" {
				// yaml.v3 gives the comment above the first key to the
				// document when a blank line separates it from the header.
				comment = doc.HeadComment
			}
			ok := comment != ""
			if !ok && value.Kind == yaml.MappingNode && value.Style&yaml.FlowStyle == 0 &&
				len(value.Content) > 0 && value.Content[0].HeadComment != "" {
				ok = true // "section:\n  # what this section is…"
			}
			if !ok && m.Style&yaml.FlowStyle != 0 {
				for _, c := range sectionComments {
					if regexp.MustCompile(`\b` + regexp.QuoteMeta(key.Value) + `\b`).MatchString(c) {
						ok = true
					}
				}
			}
			if !ok {
				undocumented = append(undocumented, fmt.Sprintf("%s (line %d)", name, key.Line))
			}
			if value.Kind == yaml.MappingNode {
				walk(value, name+".", append(append([]string(nil), sectionComments...), comment))
			}
		}
	}
	walk(doc.Content[0], "", nil)
	if len(undocumented) > 0 {
		t.Errorf("%s: no comment explains these keys: %s", path, strings.Join(undocumented, ", "))
	}
}

// TestBadConfig: an invalid switchboard.yaml (or environment override)
// stops run, homeserver and the admin commands at once, with a message that
// names the key and the problem; the file is left as the operator wrote it.
func TestBadConfig(t *testing.T) {
	t.Parallel()
	tmpl := filepath.Join(t.TempDir(), "template")
	// A free port, so a case that wrongly passes validation cannot take 8008.
	mustSB(t, cliOpts{}, "init", "--data", tmpl, "--listen", freeListen(t))
	valid := string(readFile(t, filepath.Join(tmpl, "switchboard.yaml")))
	lineOf := func(prefix string) int {
		for i, l := range strings.Split(valid, "\n") {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("template has no line starting %q", prefix)
		return 0
	}
	// replace swaps the line starting with prefix for repl.
	replace := func(prefix, repl string) string {
		lines := strings.Split(valid, "\n")
		lines[lineOf(prefix)-1] = repl
		return strings.Join(lines, "\n")
	}

	for _, tc := range []struct {
		name    string
		config  string
		env     []string
		want    []string // all must appear on stderr
		notWant []string
	}{
		{name: "unknown top-level key", config: valid + "colour: blue\n",
			want: []string{fmt.Sprintf(`line %d: unknown key "colour"`, strings.Count(valid, "\n")+1)}},
		{name: "unknown nested key", config: replace("  mode:", "  mode: \"closed\"\n  moed: \"open\""),
			want: []string{fmt.Sprintf(`line %d: unknown key "moed"`, lineOf("  mode:")+1)}},
		{name: "registration.mode", config: replace("  mode:", "  mode: bogus"),
			want: []string{`registration.mode: "bogus" must be one of closed, token, open`}},
		{name: "listen", config: replace("listen:", "listen: nonsense"),
			want: []string{`listen: "nonsense" must be HOST:PORT`}},
		{name: "database", config: replace("database:", "database: mysql://x"),
			want: []string{`database: "mysql://x" must start with sqlite: or postgres://`}},
		{name: "database password not echoed", config: replace("database:", "database: mysql://sb:hunter2@db/sb"),
			want: []string{"database: ", "mysql://sb:"}, notWant: []string{"hunter2"}},
		{name: "logging.level", config: replace("  level:", "  level: loud"),
			want: []string{`logging.level: "loud" must be one of trace, debug, info, warn, error`}},
		{name: "negative http.max_body_bytes", config: replace("  max_body_bytes:", "  max_body_bytes: -5"),
			want: []string{"http.max_body_bytes: must be at least 1024"}},
		{name: "invalid YAML", config: replace("listen:", "listen: [unclosed"),
			want: []string{"switchboard.yaml: line ", "did not find expected"}},
		{name: "wrong type", config: replace("database_max_conns:", "database_max_conns: many"),
			want: []string{fmt.Sprintf("database_max_conns (line %d): expected a whole number", lineOf("database_max_conns:"))}},
		{name: "bad duration", config: replace("  read_timeout:", "  read_timeout: soon"),
			want: []string{fmt.Sprintf(`http.read_timeout (line %d): invalid duration "soon"`, lineOf("  read_timeout:"))}},
		{name: "SWITCHBOARD_DATABASE", config: valid, env: []string{"SWITCHBOARD_DATABASE=mysql://x"},
			want: []string{`database: "mysql://x" must start with sqlite: or postgres://`}},
		{name: "SWITCHBOARD_REGISTRATION_SHARED_SECRET", config: valid, env: []string{"SWITCHBOARD_REGISTRATION_SHARED_SECRET=short"},
			want: []string{"registration.shared_secret: must be at least 16 characters"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "switchboard.yaml"), tc.config)
			writeFile(t, filepath.Join(dir, "signing.key"), string(readFile(t, filepath.Join(tmpl, "signing.key"))))
			for _, args := range [][]string{
				{"run", "--data", dir},
				{"homeserver", "--data", dir},
				{"user", "list", "--data", dir},
			} {
				r := sbWith(t, cliOpts{env: tc.env}, args...)
				cmd := strings.Join(args[:len(args)-2], " ")
				if r.code != 1 {
					t.Errorf("%s: want exit 1, got %s", cmd, r)
					continue
				}
				if r.elapsed > 5*time.Second {
					t.Errorf("%s: took %v to refuse the config", cmd, r.elapsed)
				}
				if !strings.Contains(r.stderr, filepath.Join(dir, "switchboard.yaml")) {
					t.Errorf("%s: stderr does not name the config file:\n%s", cmd, r)
				}
				for _, s := range tc.want {
					if !strings.Contains(r.stderr, s) {
						t.Errorf("%s: stderr lacks %q:\n%s", cmd, s, r)
					}
				}
				for _, s := range tc.notWant {
					if strings.Contains(r.stderr+r.stdout, s) {
						t.Errorf("%s: output shows %q:\n%s", cmd, s, r)
					}
				}
				if strings.Contains(r.stdout, "Create your first admin user") {
					t.Errorf("%s: printed the start banner for a config it refused:\n%s", cmd, r)
				}
			}
			if got := string(readFile(t, filepath.Join(dir, "switchboard.yaml"))); got != tc.config {
				t.Errorf("the refused switchboard.yaml was rewritten")
			}
			if fileExists(filepath.Join(dir, "switchboard.db")) {
				t.Errorf("a database was created for a refused config")
			}
		})
	}
}
