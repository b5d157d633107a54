package jstest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testpeer"
)

const (
	// minNodeMajor is what the pinned matrix-js-sdk declares in its
	// package.json engines field.
	minNodeMajor = 20
	// nodeRunTimeout bounds one `node --test` run, server start excluded.
	// Every wait inside the JS tests is bounded far below it, so reaching
	// it means node itself hung.
	nodeRunTimeout = 2 * time.Minute
	// perTestTimeout is node's own limit for one test() in the file.
	perTestTimeout = 60 * time.Second
	installHint    = "cd tests/js && npm ci"
)

// testUser is an account created for a JS test and handed to it as
// <NAME>_USER_ID and <NAME>_PASSWORD.
type testUser struct {
	name, userID, password string
}

func newTestUser(srv *hstest.Server, name string) testUser {
	password := "js-" + name + "-correct-horse-battery"
	userID := srv.CreateUser(name, password, false)
	return testUser{name: name, userID: string(userID), password: password}
}

// jsDir is tests/js. The source file's own path is tried first (go test
// -c binaries run from elsewhere); with -trimpath it is not a real path,
// and the package directory, where go test runs tests, is used instead.
func jsDir() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		dir := filepath.Join(filepath.Dir(file), "..", "..", "tests", "js")
		if _, err := os.Stat(filepath.Join(dir, "package.json")); err == nil {
			return dir
		}
	}
	dir, _ := filepath.Abs(filepath.Join("..", "..", "tests", "js"))
	return dir
}

var (
	nodeOnce    sync.Once
	nodePath    string
	nodeProblem string
)

// requireNode skips the test, or fails it under CI=true, when node or the
// npm packages of tests/js are missing or stale, naming the fix.
func requireNode(t *testing.T) {
	t.Helper()
	nodeOnce.Do(func() { nodePath, nodeProblem = findNode(jsDir()) })
	if nodeProblem != "" {
		testpeer.Missing(t, nodeProblem)
	}
}

// findNode returns node's path, or what is wrong with the JS setup.
func findNode(dir string) (path, problem string) {
	path, err := exec.LookPath("node")
	if err != nil {
		return "", "node is not installed (need Node.js >= " + strconv.Itoa(minNodeMajor) +
			" with npm; `apt-get install nodejs npm`), then run `" + installHint + "`"
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "", fmt.Sprintf("%s --version: %v", path, err)
	}
	version := strings.TrimSpace(string(out))
	major, _ := strconv.Atoi(strings.SplitN(strings.TrimPrefix(version, "v"), ".", 2)[0])
	if major < minNodeMajor {
		return "", fmt.Sprintf("%s is %s, but matrix-js-sdk needs Node.js >= %d", path, version, minNodeMajor)
	}

	// The installed SDK must be the one package.json pins: a stale
	// node_modules would test another SDK than the one CI tests.
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	if err := readJSON(filepath.Join(dir, "package.json"), &pkg); err != nil {
		return "", fmt.Sprintf("tests/js/package.json: %v", err)
	}
	want := pkg.Dependencies["matrix-js-sdk"]
	var installed struct {
		Version string `json:"version"`
	}
	if err := readJSON(filepath.Join(dir, "node_modules", "matrix-js-sdk", "package.json"), &installed); err != nil {
		return "", fmt.Sprintf("matrix-js-sdk is not installed in %s (run `%s`)", dir, installHint)
	}
	if installed.Version != want {
		return "", fmt.Sprintf("tests/js/node_modules has matrix-js-sdk %s but package.json pins %s (run `%s`)",
			installed.Version, want, installHint)
	}
	return path, ""
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// runNodeTest runs `node --test tests/js/<file>` against srv, with the
// server and users in the environment (see tests/js/helpers.mjs), streaming
// node's output into the test log. The SDK talks to srv through a
// recording proxy, so a failure also shows which requests it made and
// what the server answered.
func runNodeTest(t *testing.T, srv *hstest.Server, file string, users ...testUser) {
	t.Helper()
	dir := jsDir()
	proxyURL, trace := startRecordingProxy(t, srv.URL)

	env := append(os.Environ(),
		"HS_URL="+proxyURL,
		"HS_SERVER_NAME="+srv.Config.ServerName,
		"NO_COLOR=1",
	)
	for _, u := range users {
		prefix := strings.ToUpper(u.name)
		env = append(env, prefix+"_USER_ID="+u.userID, prefix+"_PASSWORD="+u.password)
	}

	// Stop node before go test's own -timeout would kill this binary and
	// leave node (in its own process group) behind.
	deadline := time.Now().Add(nodeRunTimeout)
	if d, ok := t.Deadline(); ok {
		d = d.Add(-min(5*time.Second, time.Until(d)/10))
		if d.Before(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodePath, "--test", "--test-reporter=spec", "--test-force-exit",
		"--test-timeout="+strconv.FormatInt(perTestTimeout.Milliseconds(), 10), file)
	cmd.Dir = dir
	cmd.Env = env
	// node --test runs each file in a child process: kill the whole group,
	// so a timeout leaves no node behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second

	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			if line := strings.TrimRight(sc.Text(), " \t"); line != "" {
				t.Log(line)
			}
		}
		io.Copy(io.Discard, pr) // a line over 1 MiB: keep node unblocked
	}()

	start := time.Now()
	err := cmd.Run()
	pw.Close()
	<-logged
	elapsed := time.Since(start).Round(time.Millisecond)

	if err != nil || t.Failed() || os.Getenv("SWITCHBOARD_JS_TRACE") == "1" {
		t.Logf("requests the SDK made (through the recording proxy):\n%s", trace)
	} else if missing := trace.unrecognized(); len(missing) > 0 {
		t.Logf("the SDK called endpoints the server does not implement (M_UNRECOGNIZED):\n  %s",
			strings.Join(missing, "\n  "))
	}
	switch {
	case ctx.Err() != nil:
		t.Fatalf("node --test %s did not finish within %v and was killed", file, elapsed)
	case err != nil:
		t.Fatalf("node --test %s failed after %v: %v (its output is above)", file, elapsed, err)
	}
	t.Logf("node --test %s passed in %v", file, elapsed)
}

// httpTrace records, in order, each request that passed the proxy: method,
// path (never the query, which may hold an access token), status and, for
// errors, the Matrix errcode.
type httpTrace struct {
	mu      sync.Mutex
	entries []string
	unrec   []string
}

func (h *httpTrace) add(method, path string, status int, errcode string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	line := fmt.Sprintf("%s %s → %d", method, path, status)
	if errcode != "" {
		line += " " + errcode
	}
	h.entries = append(h.entries, line)
	if errcode == "M_UNRECOGNIZED" {
		h.unrec = append(h.unrec, method+" "+path)
	}
}

func (h *httpTrace) addFailure(method, path string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries = append(h.entries, fmt.Sprintf("%s %s → no response: %v", method, path, err))
}

func (h *httpTrace) unrecognized() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, e := range h.unrec {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}

func (h *httpTrace) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entries) == 0 {
		return "  (none)"
	}
	return "  " + strings.Join(h.entries, "\n  ")
}

// startRecordingProxy serves a reverse proxy to target on a loopback port
// and returns its URL and the trace it fills. It passes requests and
// responses through unchanged, long-polls included.
func startRecordingProxy(t *testing.T, target string) (string, *httpTrace) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("parse server URL: %v", err)
	}
	trace := &httpTrace{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		var errcode string
		if resp.StatusCode >= 400 {
			head, err := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
			if err != nil {
				return err
			}
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
			var body struct {
				Errcode string `json:"errcode"`
			}
			if json.Unmarshal(head, &body) == nil {
				errcode = body.Errcode
			}
		}
		trace.add(resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, errcode)
		return nil
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if errors.Is(r.Context().Err(), context.Canceled) {
			err = errors.New("aborted by the client")
		}
		trace.addFailure(r.Method, r.URL.Path, err)
		w.WriteHeader(http.StatusBadGateway)
	}
	ts := httptest.NewServer(rp)
	t.Cleanup(ts.Close)
	return ts.URL, trace
}
