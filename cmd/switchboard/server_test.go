package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/internal/testdb"
)

// TestServerLifecycle walks an operator's first day on each database: init,
// run, manage users and registration tokens while the server runs, stop it
// with SIGTERM while a request is in flight, and start it again on the same
// data dir.
func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	testdb.ForEach(t, func(t *testing.T, dbURI string) {
		t.Parallel()
		const serverName = "switchboard.test"
		data := filepath.Join(t.TempDir(), "data")
		listen := freeListen(t)
		url := "http://" + listen

		// init on this database.
		mustSB(t, cliOpts{}, "init", "--data", data, "--server-name", serverName, "--listen", listen, "--database", dbURI, "--hooks-listen", "127.0.0.1:0")
		checkInitFiles(t, data, map[string]string{
			"server_name": serverName,
			"listen":      listen,
			"public_url":  url,
			"database":    dbURI,
		})
		cfgPath := filepath.Join(data, "switchboard.yaml")
		keyBefore := readFile(t, filepath.Join(data, "signing.key"))
		if r := sb(t, "init", "--data", data); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
			t.Errorf("second init: want exit 1 saying the config already exists, got %s", r)
		}
		// The operator opens registration to token holders, as README says.
		cfgText := string(readFile(t, cfgPath))
		if !strings.Contains(cfgText, `  mode: "closed"`) {
			t.Fatalf("switchboard.yaml has no registration mode \"closed\":\n%s", cfgText)
		}
		writeFile(t, cfgPath, strings.Replace(cfgText, `  mode: "closed"`, `  mode: "token"`, 1))
		cfgBefore := readFile(t, cfgPath)

		// run: the banner says where the server is and how to add a user.
		srv := startProcess(t, cliOpts{}, "run", "--data", data)
		srv.waitReady(url)
		banner := srv.stdout.String()
		for _, want := range []string{
			"switchboard " + testVersion,
			url,
			`"` + serverName + `"`,
		} {
			if !strings.Contains(banner, want) {
				t.Errorf("run's output lacks %q:\n%s", want, srv.output())
			}
		}
		if strings.Contains(banner, "First start") {
			t.Errorf("run claims a first start on an initialised dir:\n%s", banner)
		}
		if strings.HasPrefix(dbURI, "postgres") && strings.Contains(banner, dbURI) {
			t.Errorf("run prints the PostgreSQL URI (it may hold a password):\n%s", banner)
		}

		// user add with a password file, as admin.
		pwFile := filepath.Join(t.TempDir(), "alice.pw")
		writeFile(t, pwFile, "alice's first password\nignored second line\n")
		// The first admin is created exactly as the banner says.
		addArgs := bannerAddUser(t, srv, "alice")
		out := mustSB(t, cliOpts{}, append(addArgs, "--password-file", pwFile)...)
		aliceID := id.NewUserID("alice", serverName)
		if !strings.Contains(out, "Created admin "+aliceID.String()) {
			t.Errorf("user add --admin output: %q", out)
		}
		alice := login(t, url, "alice", "alice's first password")
		if who, err := alice.Whoami(context.Background()); err != nil || who.UserID != aliceID {
			t.Fatalf("whoami as alice: %v, %v", who, err)
		}

		// user add with the password on standard input; flags after the name.
		out = mustSB(t, cliOpts{stdin: "bob's password\n"}, "user", "add", "bob", "--data", data)
		bobID := id.NewUserID("bob", serverName)
		if !strings.Contains(out, "Created user "+bobID.String()) {
			t.Errorf("user add output: %q", out)
		}
		bob := login(t, url, "bob", "bob's password")

		// Refusals, each with a message an operator can act on.
		for _, tc := range []struct {
			args   []string
			stdin  string
			code   int
			stderr []string
		}{
			{[]string{"alice", "--password", "another password"}, "", 1,
				[]string{aliceID.String(), "already taken"}},
			{[]string{"Alice", "--password", "another password"}, "", 1, // user IDs are lowercased
				[]string{aliceID.String(), "already taken"}},
			{[]string{"Bad Name!", "--password", "a fine password"}, "", 1,
				[]string{"invalid username", `"Bad Name!"`}},
			{[]string{"carol", "--password", "short"}, "", 1,
				[]string{"at least 8 characters"}},
			{[]string{"carol", "--password", "a fine password", "--password-file", pwFile}, "", 2,
				[]string{"either --password or --password-file"}},
			{[]string{"carol"}, "", 2, // no password anywhere
				[]string{"no password given"}},
			{[]string{"carol", "--password-file", filepath.Join(t.TempDir(), "missing")}, "", 1,
				[]string{"password file", "no such file"}},
		} {
			args := append([]string{"user", "add", "--data", data}, tc.args...)
			r := sbWith(t, cliOpts{stdin: tc.stdin}, args...)
			if r.code != tc.code {
				t.Errorf("user add %q: want exit %d, got %s", tc.args, tc.code, r)
				continue
			}
			for _, s := range tc.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("user add %q: stderr lacks %q: %s", tc.args, s, r)
				}
			}
		}

		// An empty password (a blank line on stdin, an empty file) must not
		// create an account that nobody can log in to.
		emptyFile := filepath.Join(t.TempDir(), "empty.pw")
		writeFile(t, emptyFile, "")
		for _, o := range []struct {
			how   string
			stdin string
			args  []string
		}{
			{"blank line on stdin", "\n", []string{"erin"}},
			{"empty --password-file", "", []string{"frank", "--password-file", emptyFile}},
		} {
			r := sbWith(t, cliOpts{stdin: o.stdin}, append([]string{"user", "add", "--data", data}, o.args...)...)
			if r.code == 0 || !strings.Contains(r.stderr, "password") {
				t.Errorf("user add with an empty password (%s): want a non-zero exit about the password, got %s", o.how, r)
			}
		}

		// user list shows both, with the admin flag, and nobody else.
		users := listUsers(t, data)
		if len(users) != 2 || users[aliceID] != [2]string{"true", "false"} || users[bobID] != [2]string{"false", "false"} {
			t.Errorf("user list: want alice (admin) and bob, got %v", users)
		}

		// reset-password logs out alice's sessions and swaps the password.
		out = mustSB(t, cliOpts{}, "user", "reset-password", "--data", data, "alice", "--password", "alice's new password")
		if !strings.Contains(out, aliceID.String()) || !strings.Contains(out, "logged out") {
			t.Errorf("reset-password output: %q", out)
		}
		if _, err := alice.Whoami(context.Background()); !errors.Is(err, mautrix.MUnknownToken) {
			t.Errorf("alice's old access token after reset-password: want M_UNKNOWN_TOKEN, got %v", err)
		}
		loginErr(t, url, "alice", "alice's first password", mautrix.MForbidden)
		login(t, url, "alice", "alice's new password")
		if r := sb(t, "user", "reset-password", "--data", data, "nobody", "--password", "whatever password"); r.code != 1 ||
			!strings.Contains(r.stderr, "no active user "+id.NewUserID("nobody", serverName).String()) {
			t.Errorf("reset-password of a missing user: want exit 1 naming it, got %s", r)
		}

		// deactivate bob: his sessions end and he cannot log in again.
		out = mustSB(t, cliOpts{}, "user", "deactivate", "--data", data, "bob")
		if !strings.Contains(out, "Deactivated "+bobID.String()) {
			t.Errorf("deactivate output: %q", out)
		}
		if _, err := bob.Whoami(context.Background()); !errors.Is(err, mautrix.MUnknownToken) {
			t.Errorf("bob's access token after deactivation: want M_UNKNOWN_TOKEN, got %v", err)
		}
		loginErr(t, url, "bob", "bob's password", mautrix.MUserDeactivated)
		if users := listUsers(t, data); users[bobID] != [2]string{"false", "true"} || users[aliceID] != [2]string{"true", "false"} {
			t.Errorf("user list after deactivating bob: %v", users)
		}
		if r := sb(t, "user", "deactivate", "--data", data, "nobody"); r.code != 1 || !strings.Contains(r.stderr, "no such user") {
			t.Errorf("deactivate a missing user: want exit 1 saying so, got %s", r)
		}
		if r := sb(t, "user", "reset-password", "--data", data, "bob", "--password", "bob's comeback"); r.code != 1 ||
			!strings.Contains(r.stderr, "no active user "+bobID.String()) {
			t.Errorf("reset-password of a deactivated user: want exit 1, got %s", r)
		}

		// registration tokens: create, list, delete.
		token := strings.TrimSpace(mustSB(t, cliOpts{}, "registration-token", "create", "--data", data, "--uses", "2"))
		if !regexp.MustCompile(`^[A-Za-z0-9._~-]{16,}$`).MatchString(token) {
			t.Fatalf("registration-token create printed %q, want just a token", token)
		}
		custom := strings.TrimSpace(mustSB(t, cliOpts{}, "registration-token", "create", "--data", data, "--token", "welcome-2024", "--expires", "48h"))
		if custom != "welcome-2024" {
			t.Errorf("registration-token create --token printed %q", custom)
		}
		tokens := listTokens(t, data)
		if row := tokens[token]; len(row) != 5 || row[0] != "2" || row[1] != "0" || row[2] != "0" || row[len(row)-2] != "never" || row[len(row)-1] != "true" {
			t.Errorf("registration-token list: want %s with 2 uses, none used, never expiring, valid; got %v", token, tokens)
		}
		if row := tokens["welcome-2024"]; len(row) != 6 || row[0] != "unlimited" || row[len(row)-1] != "true" {
			t.Errorf("registration-token list: want welcome-2024 unlimited and valid; got %v", tokens)
		} else if exp, err := time.Parse(time.DateTime, row[3]+" "+row[4]); err != nil || time.Until(exp) < 47*time.Hour || time.Until(exp) > 49*time.Hour {
			t.Errorf("registration-token list: welcome-2024 expires %v (%v), want in 48h", row[3:5], err)
		}
		if !tokenValid(t, url, token) || !tokenValid(t, url, "welcome-2024") {
			t.Errorf("the running server does not accept the tokens just created")
		}
		for _, tc := range []struct{ token, stderr string }{
			{"welcome-2024", "already exists"},
			{"not a token!", "A-Z, a-z, 0-9"},
		} {
			if r := sb(t, "registration-token", "create", "--data", data, "--token", tc.token); r.code != 1 || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("registration-token create --token %q: want exit 1 saying %q, got %s", tc.token, tc.stderr, r)
			}
		}
		// Someone registers with the 2-use token; list shows the use. (The
		// default rate limits are on: this test stays within their bursts.)
		carolID := id.NewUserID("carol", serverName)
		if resp, err := registerWithToken(t, url, "carol", token); err != nil || resp.UserID != carolID {
			t.Errorf("register with a token from the CLI: %v, %v", resp, err)
		}
		if row := listTokens(t, data)[token]; len(row) != 5 || row[0] != "2" || row[2] != "1" || row[4] != "true" {
			t.Errorf("registration-token list after one registration: want 1 completed of 2, got %v", row)
		}
		if users := listUsers(t, data); len(users) != 3 || users[carolID] != [2]string{"false", "false"} {
			t.Errorf("user list after carol registered: %v", users)
		}
		out = mustSB(t, cliOpts{}, "registration-token", "delete", "--data", data, token)
		if !strings.Contains(out, "Deleted token "+token) {
			t.Errorf("registration-token delete output: %q", out)
		}
		if tokens := listTokens(t, data); len(tokens) != 1 || tokens[token] != nil {
			t.Errorf("registration-token list after delete: %v", tokens)
		}
		if tokenValid(t, url, token) {
			t.Errorf("the server still accepts the deleted token")
		}
		if _, err := registerWithToken(t, url, "dave", token); err == nil {
			t.Errorf("registration with a deleted token succeeded")
		}
		if r := sb(t, "registration-token", "delete", "--data", data, token); r.code != 1 || !strings.Contains(r.stderr, "no such token") {
			t.Errorf("deleting a deleted token: want exit 1 saying so, got %s", r)
		}

		// SIGTERM with a login in flight: the server stops taking new
		// connections, lets the login finish, closes the database, exits 0.
		gate := newGatedLogin()
		t.Cleanup(gate.release)
		inflight := newClient(t, url, "")
		inflight.Client.Transport = gate
		loginDone := make(chan error, 1)
		var inflightResp *mautrix.RespLogin
		go func() {
			var err error
			inflightResp, err = inflight.Login(context.Background(), passwordLogin("alice", "alice's new password"))
			loginDone <- err
		}()
		select {
		case <-gate.started:
		case err := <-loginDone:
			t.Fatalf("in-flight login finished before it was held: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("in-flight login never started sending")
		}
		time.Sleep(200 * time.Millisecond) // let the server accept the connection
		if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if !srv.waitStderr("Shutting down", 5*time.Second) {
			gate.release()
			t.Fatalf("no shutdown message after SIGTERM:\n%s", srv.output())
		}
		refused := false
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			c := newClient(t, url, "")
			c.Client.Timeout = time.Second
			if _, err := c.Versions(context.Background()); err != nil {
				refused = true
				break
			}
		}
		if !refused {
			t.Errorf("the server still answers new requests after SIGTERM")
		}
		if srv.exited() {
			t.Errorf("the server exited with a request in flight:\n%s", srv.output())
		}
		gate.release()
		if err := <-loginDone; err != nil {
			t.Errorf("the login in flight at SIGTERM failed: %v", err)
		}
		if code := srv.wait(15 * time.Second); code != 0 {
			t.Errorf("exit code after SIGTERM: %d\n%s", code, srv.output())
		}
		if !strings.Contains(srv.stderr.String(), "Stopped") {
			t.Errorf("no \"Stopped\" after SIGTERM:\n%s", srv.output())
		}
		if strings.HasPrefix(dbURI, "sqlite:") {
			// SQLite removes the write-ahead log when the last connection
			// closes cleanly; a process that just died leaves it behind.
			if wal := strings.TrimPrefix(dbURI, "sqlite:") + "-wal"; fileExists(wal) {
				t.Errorf("%s still exists: the database was not closed", wal)
			}
		}

		// A second start reuses the data dir: same key and secrets, same
		// accounts, and the session created during shutdown is still valid.
		srv2 := startProcess(t, cliOpts{}, "run", "--data", data)
		srv2.waitReady(url)
		if strings.Contains(srv2.stdout.String(), "First start") {
			t.Errorf("second start initialised again:\n%s", srv2.output())
		}
		if !bytes.Equal(keyBefore, readFile(t, filepath.Join(data, "signing.key"))) {
			t.Errorf("signing.key changed across restarts")
		}
		if !bytes.Equal(cfgBefore, readFile(t, cfgPath)) {
			t.Errorf("switchboard.yaml (and with it the shared secret) changed across restarts")
		}
		login(t, url, "alice", "alice's new password")
		loginErr(t, url, "bob", "bob's password", mautrix.MUserDeactivated)
		if inflightResp != nil {
			c := newClient(t, url, inflightResp.AccessToken)
			if who, err := c.Whoami(context.Background()); err != nil || who.UserID != aliceID {
				t.Errorf("the session from the login during shutdown does not work after restart: %v, %v", who, err)
			}
		}
		if code := srv2.signal(os.Interrupt, 15*time.Second); code != 0 || !strings.Contains(srv2.stderr.String(), "Stopped") {
			t.Errorf("after SIGINT: want exit 0 and \"Stopped\", got exit %d\n%s", code, srv2.output())
		}
	})
}

// bannerAddUser finds the "create your first admin" command in run's
// output and returns its arguments (without the program) for user name.
// The program must be this binary, by name or by the path it was started as.
func bannerAddUser(t *testing.T, p *process, name string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s+(\S+) (user add .*YOURNAME.*)$`).FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("run's output has no `user add … YOURNAME` line:\n%s", p.output())
	}
	if m[1] != "switchboard" && m[1] != binary {
		t.Errorf("the banner's command runs %q, not switchboard (%s)", m[1], binary)
	}
	if !strings.Contains(m[2], "--admin") {
		t.Errorf("the banner's command does not make an admin: %q", m[0])
	}
	return strings.Fields(strings.Replace(m[2], "YOURNAME", name, 1))
}

// listUsers runs `user list` and returns user ID → [admin, deactivated].
func listUsers(t *testing.T, data string) map[id.UserID][2]string {
	t.Helper()
	out := mustSB(t, cliOpts{}, "user", "list", "--data", data)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "USER ID") || !strings.Contains(lines[0], "ADMIN") || !strings.Contains(lines[0], "DEACTIVATED") {
		t.Fatalf("user list has no header:\n%s", out)
	}
	users := map[id.UserID][2]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 6 {
			t.Fatalf("user list: malformed line %q", l)
		}
		if appservice := f[len(f)-1]; appservice != "-" {
			// An appservice's user (the webhook bridge's bot, which `run`
			// starts), not one of the test's.
			if appservice != "webhooks" {
				t.Errorf("user list: %s belongs to unexpected appservice %q", f[0], appservice)
			}
			continue
		}
		users[id.UserID(f[0])] = [2]string{f[1], f[2]}
	}
	return users
}

// listTokens runs `registration-token list` and returns token → its other
// columns (uses allowed, pending, completed, expiry as one or two fields, valid).
func listTokens(t *testing.T, data string) map[string][]string {
	t.Helper()
	out := mustSB(t, cliOpts{}, "registration-token", "list", "--data", data)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "TOKEN") {
		t.Fatalf("registration-token list has no header:\n%s", out)
	}
	tokens := map[string][]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		tokens[f[0]] = f[1:]
	}
	return tokens
}

// tokenValid asks the server whether a registration token is usable.
func tokenValid(t *testing.T, url, token string) bool {
	t.Helper()
	cli := newClient(t, url, "")
	var resp struct {
		Valid *bool `json:"valid"`
	}
	u := cli.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "register", "m.login.registration_token", "validity"}, map[string]string{"token": token})
	if _, err := cli.MakeRequest(context.Background(), http.MethodGet, u, nil, &resp); err != nil || resp.Valid == nil {
		t.Fatalf("registration token validity of %q: %v (valid: %v)", token, err, resp.Valid)
	}
	return *resp.Valid
}

// registerWithToken registers through /register's registration-token stage.
func registerWithToken(t *testing.T, url, name, token string) (*mautrix.RespRegister, error) {
	t.Helper()
	cli := newClient(t, url, "")
	req := &mautrix.ReqRegister[any]{Username: name, Password: name + "'s password"}
	_, uia, err := cli.Register(context.Background(), req)
	if uia == nil {
		t.Fatalf("register %s: want a user-interactive auth challenge, got %v", name, err)
	}
	req.Auth = map[string]any{"type": "m.login.registration_token", "token": token, "session": uia.Session}
	resp, _, err := cli.Register(context.Background(), req)
	return resp, err
}

// gatedLogin is an http.RoundTripper that sends the first half of a /login
// request body, then holds the rest until release, so the test knows the
// request is in flight on the server when it sends a signal.
type gatedLogin struct {
	base        http.RoundTripper
	started     chan struct{}
	releaseCh   chan struct{}
	releaseOnce sync.Once
}

func newGatedLogin() *gatedLogin {
	return &gatedLogin{
		base:      &http.Transport{DisableKeepAlives: true},
		started:   make(chan struct{}),
		releaseCh: make(chan struct{}),
	}
}

func (g *gatedLogin) release() { g.releaseOnce.Do(func() { close(g.releaseCh) }) }

func (g *gatedLogin) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/login") || req.Body == nil {
		return g.base.RoundTrip(req)
	}
	data, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	// Unknown length: sent chunked, and each chunk is flushed to the
	// server as soon as it is read.
	req.ContentLength = -1
	req.GetBody = nil
	req.Body = &gatedBody{g: g, data: data, half: len(data) / 2}
	return g.base.RoundTrip(req)
}

type gatedBody struct {
	g       *gatedLogin
	data    []byte
	pos     int
	half    int
	started sync.Once
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if b.pos == b.half {
		b.started.Do(func() { close(b.g.started) })
		<-b.g.releaseCh
	}
	if b.pos >= len(b.data) {
		return 0, io.EOF
	}
	end := len(b.data)
	if b.pos < b.half {
		end = b.half
	}
	n := copy(p, b.data[b.pos:end])
	b.pos += n
	return n, nil
}

func (b *gatedBody) Close() error { return nil }

// TestRunInitialisesDefaults: `switchboard run` with no flags in an empty
// directory writes ./data with the defaults and starts on 127.0.0.1:8008.
// That port is shared with anything else on the machine, so when something
// else holds it the test checks the refusal instead of the server.
func TestRunInitialisesDefaults(t *testing.T) {
	t.Parallel()
	cwd := t.TempDir()
	data := filepath.Join(cwd, "data")
	srv := startProcess(t, cliOpts{dir: cwd}, "run")
	const url = "http://127.0.0.1:8008"
	// Either it listens, or it exits because the port is taken.
	if !srv.waitStderr("Homeserver listening", 20*time.Second) && !srv.exited() {
		t.Fatalf("run neither listened nor exited within 20s:\n%s", srv.output())
	}

	// Whatever happened to the port, the data dir was initialised with the
	// defaults and the output says so.
	checkInitFiles(t, data, map[string]string{
		"server_name": "localhost",
		"listen":      "127.0.0.1:8008",
		"public_url":  url,
		"database":    "sqlite:switchboard.db",
	})
	out := srv.stdout.String()
	if !strings.Contains(out, "First start: wrote data/switchboard.yaml") {
		t.Errorf("run does not say it wrote the config:\n%s", srv.output())
	}

	if srv.exited() {
		if srv.code == 0 || !strings.Contains(srv.stderr.String(), "127.0.0.1:8008") || !strings.Contains(srv.stderr.String(), "address already in use") {
			t.Fatalf("run exited without serving, and not because 8008 is taken:\n%s", srv.output())
		}
		t.Logf("127.0.0.1:8008 is taken on this machine; checked initialisation only")
		return
	}
	srv.waitReady(url)
	for _, want := range []string{url, `server name "localhost"`} {
		if !strings.Contains(out, want) {
			t.Errorf("run's output lacks %q:\n%s", want, srv.output())
		}
	}
	if args := bannerAddUser(t, srv, "admin"); !strings.Contains(strings.Join(args, " "), "--data ./data") {
		t.Errorf("the banner's user add command does not name ./data: %q", args)
	}
	// The admin commands find ./data by default too.
	mustSB(t, cliOpts{dir: cwd, stdin: "a password for admin\n"}, "user", "add", "--admin", "admin")
	login(t, url, "admin", "a password for admin")
	if users := listUsers(t, data); users["@admin:localhost"] != [2]string{"true", "false"} {
		t.Errorf("user list: %v", users)
	}
	if code := srv.signal(syscall.SIGTERM, 15*time.Second); code != 0 || !strings.Contains(srv.stderr.String(), "Stopped") {
		t.Errorf("after SIGTERM: want exit 0 and \"Stopped\", got exit %d\n%s", code, srv.output())
	}
}
