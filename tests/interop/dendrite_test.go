//go:build interop

// Package interop runs our example bots, unchanged and as their own
// processes, against homeservers we did not write. It is opt-in
// (`make test-interop`, build tag interop): it downloads and builds the
// peer homeserver from the Go module proxy, which `make test` must not do.
package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// dendriteVersion is the Dendrite release the test installs; the binaries
// are cached per version under .cache/interop/.
const dendriteVersion = "v0.13.8"

// dendriteServerName is the homeserver's server name. Federation is off,
// so it never has to resolve.
const dendriteServerName = "localhost"

// repoRoot is the module root (the test runs in tests/interop).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// installDendrite returns the directory holding the dendrite,
// generate-keys and generate-config binaries, building them with
// `go install` into the cache the first time.
func installDendrite(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(repoRoot(t), ".cache", "interop", "dendrite-"+dendriteVersion, "bin")
	cmds := []string{"dendrite", "generate-keys", "generate-config"}
	missing := false
	for _, c := range cmds {
		if _, err := os.Stat(filepath.Join(bin, c)); err != nil {
			missing = true
		}
	}
	if !missing {
		return bin
	}
	args := []string{"install"}
	for _, c := range cmds {
		args = append(args, "github.com/matrix-org/dendrite/cmd/"+c+"@"+dendriteVersion)
	}
	t.Logf("installing Dendrite %s into %s (first run only; takes a few minutes)", dendriteVersion, bin)
	start := time.Now()
	cmd := exec.Command("go", args...)
	// Outside our module: Dendrite's own go.mod decides its dependencies.
	cmd.Dir = os.TempDir()
	// go-sqlite3 needs cgo. Dendrite's go.mod asks for an older Go than
	// ours; it builds with our toolchain (1.27) as it is.
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "CGO_ENABLED=1", "GOTOOLCHAIN=auto")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("installed Dendrite in %v", time.Since(start).Round(time.Second))
	return bin
}

// dendrite is a running Dendrite monolith.
type dendrite struct {
	URL string
	cmd *exec.Cmd
	log string
}

// startDendrite runs Dendrite on addr (a free loopback host:port) with SQLite databases
// in a temporary directory, federation off, open registration (for the
// test users) and the given appservice registration files. It stops when
// the test ends.
func startDendrite(t *testing.T, bin, addr string, registrations []string) *dendrite {
	t.Helper()
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("generate-keys", "--private-key", filepath.Join(dir, "matrix_key.pem"))

	// generate-config writes a complete config with Dendrite's defaults and
	// one SQLite file per component under -dir; we then change only what
	// this test needs, so the rest is what an operator would start from.
	cmd := exec.Command(filepath.Join(bin, "generate-config"), "-dir", dir, "-server", dendriteServerName)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	generated, err := cmd.Output()
	if err != nil {
		t.Fatalf("generate-config: %v\n%s", err, stderr.String())
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(generated, &cfg); err != nil {
		t.Fatalf("generate-config output: %v", err)
	}
	set := func(path string, value any) {
		t.Helper()
		keys := strings.Split(path, ".")
		m := cfg
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = value
	}
	set("global.private_key", filepath.Join(dir, "matrix_key.pem"))
	set("global.disable_federation", true)
	set("global.jetstream.storage_path", filepath.Join(dir, "jetstream"))
	set("global.report_stats.enabled", false)
	set("global.presence.enable_inbound", false)
	set("global.presence.enable_outbound", false)
	set("global.trusted_third_party_id_servers", []string{})
	// No key notary (matrix.org by default): nothing leaves the machine.
	set("federation_api.key_perspectives", []any{})
	set("client_api.registration_disabled", false)
	set("client_api.guests_disabled", true)
	set("client_api.rate_limiting.enabled", false)
	set("user_api.bcrypt_cost", 4)
	set("media_api.base_path", filepath.Join(dir, "media_store"))
	set("sync_api.search.enabled", false)
	set("app_service_api.config_files", registrations)
	set("logging", []any{map[string]any{"type": "std", "level": "info"}})
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "dendrite.yaml")
	if err := os.WriteFile(cfgPath, out, 0o600); err != nil {
		t.Fatal(err)
	}

	d := &dendrite{URL: "http://" + addr, log: filepath.Join(dir, "dendrite.log")}
	d.cmd = startProcess(t, "dendrite", d.log, dir, filepath.Join(bin, "dendrite"),
		"-config", cfgPath, "-http-bind-address", addr,
		// Open registration without a captcha: the test users sign up with
		// m.login.dummy like any client.
		"-really-enable-open-registration")
	waitHTTP(t, d.URL+"/_matrix/client/versions", d.cmd, 60*time.Second)
	return d
}

// logLines is how much of a peer's log a failed test prints; INTEROP_LOGS=1
// prints it after a passing test too, to see what the peer made of us.
const logLines = 200

// startProcess starts a program with its output in logPath, stops it with
// SIGTERM when the test ends, and prints the end of its log if the test
// failed (or INTEROP_LOGS is set).
func startProcess(t *testing.T, name, logPath, dir, path string, args ...string) *exec.Cmd {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "LOG_LEVEL=debug")
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() || os.Getenv("INTEROP_LOGS") != "" {
			t.Logf("--- end of %s log (%s) ---\n%s", name, logPath, tail(logPath, logLines))
		}
	})
	return cmd
}

// waitHTTP waits until url answers 200, failing early if the process
// exited (startProcess prints its log).
func waitHTTP(t *testing.T, url string, cmd *exec.Cmd, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if processExited(cmd) {
			t.Fatalf("%s exited before answering %s (its log follows)", cmd.Path, url)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not answer within %v (last error: %v)", url, timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// processExited reports whether the process is gone (signal 0 fails).
func processExited(cmd *exec.Cmd) bool {
	err := cmd.Process.Signal(syscall.Signal(0))
	return err != nil && errors.Is(err, os.ErrProcessDone)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
