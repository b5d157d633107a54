package main

// The tests in this package run the real switchboard binary, built once by
// TestMain, as a subprocess: what they assert is what an operator sees on the
// terminal (exit codes, stdout, stderr, files in the data directory) and what a
// Matrix client sees over HTTP (through mautrix's Client).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/internal/loopback"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// testVersion is linked into the binary under test, so `version` and the run
// banner can be checked for the exact text.
const testVersion = "0.0.0-clitest"

// binary is the path of the switchboard binary under test.
var binary string

func TestMain(m *testing.M) {
	dir, err := buildBinary()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build switchboard: %v\n", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "switchboard")
	testdb.Main(m) // runs the tests and exits
}

// buildBinary builds ./ into a per-process temp dir. testdb.Main exits the
// process, so the dir cannot be removed afterwards: instead each run removes
// the dirs left by earlier runs whose process is gone.
func buildBinary() (string, error) {
	const prefix = "switchboard-clitest-"
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, d := range stale {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), prefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if p, err := os.FindProcess(pid); err != nil || errors.Is(p.Signal(syscall.Signal(0)), os.ErrProcessDone) {
			os.RemoveAll(d)
		}
	}
	dir := filepath.Join(os.TempDir(), prefix+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// "go test" puts its own GOROOT/bin first in PATH, so this is the
	// toolchain that built the test.
	ldflags := "-X github.com/switchboard-im/switchboard/internal/buildinfo.Version=" + testVersion
	cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", filepath.Join(dir, "switchboard"), ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return dir, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// cleanEnv is the environment for the binary: ours without SWITCHBOARD_*
// overrides (a developer's shell must not change what the tests see), plus
// extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SWITCHBOARD_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// result is one finished CLI invocation.
type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// cliOpts tweaks one invocation.
type cliOpts struct {
	stdin string
	env   []string
	dir   string // working directory
}

// sb runs `switchboard args...` to completion (at most 30s).
func sb(t *testing.T, args ...string) result {
	t.Helper()
	return sbWith(t, cliOpts{}, args...)
}

func sbWith(t *testing.T, o cliOpts, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = cleanEnv(o.env...)
	cmd.Dir = o.dir
	cmd.Stdin = strings.NewReader(o.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.Exited():
		r.code = exitErr.ExitCode()
	case ctx.Err() != nil:
		t.Fatalf("switchboard %s: still running after 30s\n%s", strings.Join(args, " "), r)
	default:
		t.Fatalf("switchboard %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustSB runs a command that must succeed and returns its stdout.
func mustSB(t *testing.T, o cliOpts, args ...string) string {
	t.Helper()
	r := sbWith(t, o, args...)
	if r.code != 0 {
		t.Fatalf("switchboard %s: want exit 0, got %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// syncBuffer collects a subprocess's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is a long-running switchboard (run or homeserver).
type process struct {
	t      *testing.T
	args   []string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	code   int // valid after done; -1: killed by a signal
}

// startProcess starts `switchboard args...`; it is killed when the test
// ends if it is still running.
func startProcess(t *testing.T, o cliOpts, args ...string) *process {
	t.Helper()
	p := &process{t: t, args: args, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = cleanEnv(o.env...)
	p.cmd.Dir = o.dir
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start switchboard %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		err := p.cmd.Wait()
		var exitErr *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exitErr):
			p.code = exitErr.ExitCode()
		default:
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) output() string {
	return fmt.Sprintf("--- stdout:\n%s--- stderr:\n%s", p.stdout.String(), p.stderr.String())
}

// waitReady polls GET /_matrix/client/versions until it answers, failing
// the test if the process exits first or nothing answers within 20s.
func (p *process) waitReady(url string) {
	p.t.Helper()
	cli := newClient(p.t, url, "")
	cli.Client.Timeout = 2 * time.Second
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := cli.Versions(ctx)
		cancel()
		if err == nil {
			if len(resp.Versions) == 0 {
				p.t.Fatalf("%s/_matrix/client/versions lists no versions", url)
			}
			return
		}
		if p.exited() {
			p.t.Fatalf("switchboard %s exited with %d before serving %s\n%s", strings.Join(p.args, " "), p.code, url, p.output())
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("switchboard %s: %s not answering after 20s (last error: %v)\n%s", strings.Join(p.args, " "), url, err, p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitStderr waits until stderr contains s or the process exits.
func (p *process) waitStderr(s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.stderr.String(), s) {
		if p.exited() || time.Now().After(deadline) {
			return strings.Contains(p.stderr.String(), s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// signal sends sig and waits up to timeout for the exit; it returns the exit
// code and fails the test if the process does not exit in time.
func (p *process) signal(sig os.Signal, timeout time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
	return p.wait(timeout)
}

func (p *process) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("switchboard %s still running %v later\n%s", strings.Join(p.args, " "), timeout, p.output())
		return 0
	}
}

// freeListen returns a loopback HOST:PORT that was free a moment ago.
func freeListen(t *testing.T) string {
	t.Helper()
	addr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// newClient returns a mautrix client for the homeserver at url.
func newClient(t *testing.T, url, accessToken string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(url, "", accessToken)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	cli.Client = &http.Client{Timeout: 30 * time.Second}
	return cli
}

func passwordLogin(user, password string) *mautrix.ReqLogin {
	return &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:   password,
	}
}

// login logs in with a password and returns a client holding the new token.
func login(t *testing.T, url, user, password string) *mautrix.Client {
	t.Helper()
	cli := newClient(t, url, "")
	req := passwordLogin(user, password)
	req.StoreCredentials = true
	if _, err := cli.Login(context.Background(), req); err != nil {
		t.Fatalf("login as %s: %v", user, err)
	}
	return cli
}

// loginErr attempts a login that must fail with want.
func loginErr(t *testing.T, url, user, password string, want mautrix.RespError) {
	t.Helper()
	_, err := newClient(t, url, "").Login(context.Background(), passwordLogin(user, password))
	if !errors.Is(err, want) {
		t.Fatalf("login as %s: want %s, got %v", user, want.ErrCode, err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
