package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// registration is a valid registration file for an appservice called name
// with user namespace "@_NAME_.*:example\.org".
func registration(name string) string {
	return `# the ` + name + ` bridge
id: ` + name + `
url: "http://127.0.0.1:29300"
as_token: "as-token-of-` + name + `-0123456789"
hs_token: "hs-token-of-` + name + `-0123456789"
sender_localpart: "_` + name + `_bot"
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@_` + name + `_.*:example\\.org"
  aliases:
    - exclusive: true
      regex: "#_` + name + `_.*:example\\.org"
  rooms: []
`
}

// listAppservices runs `appservice list` and returns its rows by ID.
func listAppservices(t *testing.T, data string) (header string, rows map[string]string) {
	t.Helper()
	out := mustSB(t, cliOpts{}, "appservice", "list", "--data", data)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	rows = map[string]string{}
	for _, l := range lines[1:] {
		rows[strings.Fields(l)[0]] = l
	}
	return lines[0], rows
}

// TestAppserviceCommands: an operator adds, lists and removes registration
// files; every invalid one is refused with a message naming the file and
// the field, and nothing is installed.
func TestAppserviceCommands(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	data := filepath.Join(base, "data")
	mustSB(t, cliOpts{}, "init", "--data", data, "--server-name", "example.org", "--listen", freeListen(t), "--hooks-listen", "127.0.0.1:0")
	asDir := filepath.Join(data, "appservices")

	header, rows := listAppservices(t, data)
	if !strings.HasPrefix(header, "ID") || !strings.Contains(header, "URL") || !strings.Contains(header, "SENDER") ||
		!strings.Contains(header, "USER NAMESPACES") || !strings.Contains(header, "RATE LIMITED") || !strings.HasSuffix(header, "FILE") || len(rows) != 0 {
		t.Fatalf("list on a fresh data dir: header %q, rows %v", header, rows)
	}

	// add copies the file, byte for byte, readable by the owner only.
	ircFile := filepath.Join(base, "irc-registration.yaml")
	writeFile(t, ircFile, registration("irc"))
	out := mustSB(t, cliOpts{}, "appservice", "add", "--data", data, ircFile)
	installed := filepath.Join(asDir, "irc.yaml")
	if !strings.Contains(out, `Added appservice "irc" as `+installed) || !strings.Contains(out, "@_irc_bot:example.org") {
		t.Errorf("add says:\n%s", out)
	}
	if got := string(readFile(t, installed)); got != registration("irc") {
		t.Errorf("installed file differs from the original:\n%s", got)
	}
	for path, mode := range map[string]os.FileMode{asDir: 0o700 | os.ModeDir, installed: 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v, %v; want mode %v", path, fi.Mode(), err, mode)
		}
	}
	_, rows = listAppservices(t, data)
	row := rows["irc"]
	for _, want := range []string{"http://127.0.0.1:29300", "@_irc_bot:example.org", `@_irc_.*:example\.org (exclusive)`, "false", installed} {
		if !strings.Contains(row, want) {
			t.Errorf("list row for irc lacks %q: %q", want, row)
		}
	}

	// Refused additions name the file and the field, print no token, and
	// install nothing.
	user := mustSB(t, cliOpts{stdin: "correct horse battery\n"}, "user", "add", "--data", data, "alice")
	if !strings.Contains(user, "@alice:example.org") {
		t.Fatalf("user add: %s", user)
	}
	bad := func(name, content string) string {
		p := filepath.Join(base, name)
		writeFile(t, p, content)
		return p
	}
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"the same file again", ircFile, []string{ircFile + ": id: \"irc\" is already the id of " + installed}},
		{"the installed file", installed, []string{installed + " is already registered"}},
		{"a reused as_token", bad("reuse.yaml", strings.Replace(registration("slack"), "as-token-of-slack", "as-token-of-irc", 1)),
			[]string{"reuse.yaml: as_token: the same token is the as_token of " + installed}},
		{"a bad regex", bad("regex.yaml", strings.Replace(registration("slack"), `"@_slack_.*:example\\.org"`, `"@_slack_(.*"`, 1)),
			[]string{"regex.yaml: namespaces.users[0].regex: error parsing regexp: missing closing )"}},
		{"an overlapping exclusive namespace", bad("overlap.yaml", strings.Replace(registration("slack"), `"@_slack_.*:example\\.org"`, `"@_.*"`, 1)),
			[]string{"overlap.yaml: namespaces.users[0].regex: exclusive namespace `@_.*` overlaps the exclusive namespace `@_irc_.*:example\\.org` of " + installed}},
		{"a namespace capturing an existing user", bad("capture.yaml", strings.Replace(registration("slack"), `"@_slack_.*:example\\.org"`, `"@a.*"`, 1)),
			[]string{"capture.yaml: namespaces.users[0].regex: exclusive namespace `@a.*` captures the existing user @alice:example.org"}},
		{"an id that cannot name a file", bad("slash.yaml", strings.Replace(registration("slack"), "id: slack", "id: ../slack", 1)),
			[]string{`slash.yaml: id: "../slack" cannot name a file`}},
		{"a missing file", filepath.Join(base, "nope.yaml"), []string{"no such file"}},
	} {
		r := sb(t, "appservice", "add", "--data", data, tc.file)
		if r.code != 1 {
			t.Errorf("add %s: want exit 1, got %s", tc.name, r)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, "switchboard appservice: ") || !strings.Contains(r.stderr, w) {
				t.Errorf("add %s: stderr lacks %q:\n%s", tc.name, w, r)
			}
		}
		if strings.Contains(r.stderr, "-0123456789") {
			t.Errorf("add %s: the message quotes a token:\n%s", tc.name, r)
		}
	}
	if entries, _ := os.ReadDir(asDir); len(entries) != 1 {
		t.Errorf("refused additions left files in %s: %v", asDir, entries)
	}

	// A registration kept elsewhere, listed in the config.
	writeFile(t, filepath.Join(base, "slack.yaml"), registration("slack"))
	cfgPath := filepath.Join(data, "switchboard.yaml")
	cfg := string(readFile(t, cfgPath))
	setList := func(list string) {
		t.Helper()
		writeFile(t, cfgPath, strings.Replace(cfg, "appservice_registrations: []", "appservice_registrations: "+list, 1))
	}
	setList(`["../slack.yaml"]`)
	_, rows = listAppservices(t, data)
	if len(rows) != 2 || !strings.Contains(rows["slack"], filepath.Join(data, "../slack.yaml")) {
		t.Errorf("list with a config-listed registration: %v", rows)
	}
	r := sb(t, "appservice", "remove", "--data", data, "slack")
	if r.code != 1 || !strings.Contains(r.stderr, "appservice_registrations[0] of "+cfgPath) || !fileExists(filepath.Join(base, "slack.yaml")) {
		t.Errorf("remove of a config-listed registration: want exit 1 pointing at the config and the file kept, got %s", r)
	}

	// The config's entries are checked; the files they name are checked at load.
	setList(`[""]`)
	if r := sb(t, "appservice", "list", "--data", data); r.code != 1 || !strings.Contains(r.stderr, "appservice_registrations[0]: must be the path of a registration file") {
		t.Errorf("empty appservice_registrations entry: %s", r)
	}
	setList(`["slack.yaml"]`)
	if r := sb(t, "appservice", "list", "--data", data); r.code != 1 ||
		!strings.Contains(r.stderr, filepath.Join(data, "slack.yaml")+": cannot read the file listed in appservice_registrations[0]") {
		t.Errorf("missing config-listed file: %s", r)
	}
	setList("[]")

	// remove deletes the installed file, also when it no longer validates.
	writeFile(t, installed, strings.Replace(registration("irc"), "_irc_bot", "IRC Bot", 1))
	if r := sb(t, "appservice", "list", "--data", data); r.code != 1 || !strings.Contains(r.stderr, installed+": sender_localpart: ") {
		t.Errorf("list with an invalid registration: %s", r)
	}
	out = mustSB(t, cliOpts{}, "appservice", "remove", "--data", data, "irc")
	if !strings.Contains(out, `Removed appservice "irc" (`+installed+")") || fileExists(installed) {
		t.Errorf("remove: %s (file still there: %v)", out, fileExists(installed))
	}
	if _, rows = listAppservices(t, data); len(rows) != 0 {
		t.Errorf("list after remove: %v", rows)
	}
	if r := sb(t, "appservice", "remove", "--data", data, "irc"); r.code != 1 || !strings.Contains(r.stderr, `no appservice with id "irc"`) {
		t.Errorf("remove twice: %s", r)
	}
}

func TestAppserviceUsage(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"appservice"}, 2, "expected a subcommand: list, add, remove"},
		{[]string{"appservice", "delete", "irc"}, 2, `unknown subcommand "delete" (list, add, remove)`},
		{[]string{"appservice", "add", "--data", missing}, 2, "expected exactly one registration file"},
		{[]string{"appservice", "remove", "--data", missing, "a", "b"}, 2, "expected exactly one appservice id"},
		{[]string{"appservice", "list", "--data", missing, "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"appservice", "list", "--data", missing}, 1, filepath.Join(missing, "switchboard.yaml")},
		{[]string{"appservice", "list", "-h"}, 0, "-data"},
		{[]string{"help"}, 0, "  appservice "},
	} {
		r := sb(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.stderr) {
			t.Errorf("switchboard %s: want exit %d and %q on stderr, got %s", strings.Join(tc.args, " "), tc.code, tc.stderr, r)
		}
	}
	if fileExists(missing) {
		t.Errorf("a failed appservice command created %s", missing)
	}
}

// TestAppserviceSIGHUP: an appservice added while the server runs works
// after SIGHUP, without a restart; a broken file leaves the old set in force.
func TestAppserviceSIGHUP(t *testing.T) {
	data := t.TempDir()
	listen := freeListen(t)
	mustSB(t, cliOpts{}, "init", "--data", data, "--listen", listen, "--server-name", "example.org", "--hooks-listen", "127.0.0.1:0")
	p := startProcess(t, cliOpts{}, "run", "--data", data)
	url := "http://" + listen
	p.waitReady(url)
	file := filepath.Join(t.TempDir(), "late.yaml")
	writeFile(t, file, registration("late"))
	mustSB(t, cliOpts{}, "appservice", "add", "--data", data, file)

	bot := newClient(t, url, "as-token-of-late-0123456789")
	if _, err := bot.Whoami(context.Background()); err == nil {
		t.Fatal("the new appservice worked before SIGHUP")
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		who, err := bot.Whoami(context.Background())
		if err == nil {
			if who.UserID != "@_late_bot:example.org" {
				t.Fatalf("appservice sender = %s", who.UserID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("appservice token still refused 10s after SIGHUP: %v\n%s", err, p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A broken registration: the reload is refused, the old set stays.
	writeFile(t, filepath.Join(data, "appservices", "broken.yaml"), "id: broken\nnamespaces: [\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !p.waitStderr("not reloaded", 10*time.Second) {
		t.Fatalf("no log line about the refused reload:\n%s", p.output())
	}
	if _, err := bot.Whoami(context.Background()); err != nil {
		t.Fatalf("a refused reload dropped the working appservice: %v", err)
	}
	if p.exited() {
		t.Fatal("SIGHUP stopped the server")
	}
	// The list shows each queue: late's URL does not answer, so nothing
	// has ever been delivered to it.
	os.Remove(filepath.Join(data, "appservices", "broken.yaml"))
	header, rows := listAppservices(t, data)
	for _, col := range []string{"QUEUE", "IN FLIGHT", "LAST SUCCESS", "FAILURES"} {
		if !strings.Contains(header, col) {
			t.Fatalf("appservice list lacks %s: %s", col, header)
		}
	}
	if !strings.Contains(rows["late"], "never") {
		t.Fatalf("late's row: %s", rows["late"])
	}
}
