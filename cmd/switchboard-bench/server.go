package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/switchboard-im/switchboard/internal/loopback"
)

// server is the `switchboard run` child process under test.
type server struct {
	binary  string
	dataDir string
	baseURL string
	logPath string
	env     []string

	cfgHashing hashing

	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been reaped
	waitErr error
}

type hashing struct {
	MemoryKiB   int `yaml:"memory_kib"`
	Iterations  int `yaml:"iterations"`
	Parallelism int `yaml:"parallelism"`
}

// setupServer writes a data dir for a server on a free loopback port: the
// config `switchboard init` generates, with rate limits off (the bench is one
// IP hammering /login) and warn-level logging. Password hashing keeps the
// production defaults so logins/s reflects the real cost.
func setupServer(ctx context.Context, o options, dir string) (*server, error) {
	port, err := loopback.FreePort()
	if err != nil {
		return nil, err
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &server{
		binary:  o.binary,
		dataDir: filepath.Join(dir, "data"),
		baseURL: "http://" + listen,
		logPath: filepath.Join(dir, "server.log"),
		env:     benchEnv(),
	}
	args := []string{"init", "--data", s.dataDir, "--listen", listen, "--public-url", s.baseURL, "--hooks-listen", "127.0.0.1:0"}
	if o.database != "" {
		args = append(args, "--database", o.database)
	}
	if out, err := s.command(ctx, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("switchboard init: %w\n%s", err, out)
	}
	if err := s.tuneConfig(); err != nil {
		return nil, err
	}
	return s, nil
}

// benchEnv is this process's environment minus the variables that would
// override the bench's config (the database especially).
func benchEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SWITCHBOARD_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (s *server) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, s.binary, args...)
	cmd.Env = s.env
	return cmd
}

// tuneConfig edits the generated YAML in place (comments kept).
func (s *server) tuneConfig() error {
	return editConfig(s.dataDir, func(root *yaml.Node) error {
		limits := mapValue(root, "rate_limits")
		if limits == nil || limits.Kind != yaml.MappingNode {
			return errors.New("generated config has no rate_limits mapping")
		}
		for i := 1; i < len(limits.Content); i += 2 {
			per := mapValue(limits.Content[i], "per_second")
			if per == nil {
				return fmt.Errorf("rate_limits.%s has no per_second", limits.Content[i-1].Value)
			}
			per.Value, per.Tag = "0", "!!int"
		}
		level := mapValue(mapValue(root, "logging"), "level")
		if level == nil {
			return errors.New("generated config has no logging.level")
		}
		level.Value = "warn"
		hashNode := mapValue(mapValue(root, "auth"), "password_hashing")
		if hashNode == nil {
			return errors.New("generated config has no auth.password_hashing")
		}
		if err := hashNode.Decode(&s.cfgHashing); err != nil {
			return fmt.Errorf("auth.password_hashing: %w", err)
		}
		return nil
	})
}

// editConfig rewrites DATA/switchboard.yaml after edit changed its YAML
// tree (the root mapping).
func editConfig(dataDir string, edit func(root *yaml.Node) error) error {
	path := filepath.Join(dataDir, "switchboard.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse generated config: %w", err)
	}
	if len(doc.Content) != 1 {
		return errors.New("generated config is not one YAML document")
	}
	if err := edit(doc.Content[0]); err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// mapValue returns the value node for key in a mapping node, or the node
// itself for an empty key; nil when absent.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || key == "" {
		return m
	}
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// start launches `switchboard run` and waits until /versions answers.
func (s *server) start(ctx context.Context) error {
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return fmt.Errorf("server log: %w", err)
	}
	s.cmd = exec.Command(s.binary, "run", "--data", s.dataDir)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	// Its own process group: a Ctrl-C on the bench must not reach the
	// server before the bench stops it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", s.binary, err)
	}
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.baseURL+"/_matrix/client/versions", nil)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		select {
		case <-s.exited:
			s.printLogTail(os.Stderr)
			return fmt.Errorf("server exited before answering /versions: %v", s.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.printLogTail(os.Stderr)
			return fmt.Errorf("server did not answer /versions within 60s: %v", err)
		}
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop sends SIGTERM and waits up to timeout for a clean exit. It returns
// the exit code (-1 when killed or unknown) and how long stopping took.
func (s *server) stop(timeout time.Duration) (int, time.Duration, error) {
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, 0, fmt.Errorf("signal server: %w", err)
	}
	select {
	case <-s.exited:
	case <-time.After(timeout):
		s.kill()
		return -1, time.Since(start), fmt.Errorf("server did not exit within %s of SIGTERM (killed)", timeout)
	}
	took := time.Since(start)
	code := s.cmd.ProcessState.ExitCode()
	if code != 0 {
		return code, took, fmt.Errorf("server exited with %v after SIGTERM", s.waitErr)
	}
	return code, took, nil
}

// kill stops the server hard (error paths only).
func (s *server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Kill()
	<-s.exited
}

// printLogTail shows the end of the server's log, for failures.
func (s *server) printLogTail(w io.Writer) {
	data, err := os.ReadFile(s.logPath)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	fmt.Fprintf(w, "--- last lines of the server log (%s) ---\n%s\n---\n", s.logPath, strings.Join(lines, "\n"))
}

type benchUser struct {
	name     string
	password string
}

// createUsers adds n users with `switchboard user add` while the server
// runs, as an operator would. Names carry a random run ID so repeated runs
// against one PostgreSQL database do not collide.
func (s *server) createUsers(ctx context.Context, n int) ([]benchUser, error) {
	runID := randomHex(3)
	password := randomHex(12)
	pwFile := filepath.Join(filepath.Dir(s.dataDir), "password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write password file: %w", err)
	}
	users := make([]benchUser, n)
	for i := range users {
		users[i] = benchUser{name: fmt.Sprintf("bench-%s-%02d", runID, i+1), password: password}
	}
	// Two at a time: each `user add` hashes a password (one core).
	errs := make([]error, n)
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out, err := s.command(ctx, "user", "add", "--data", s.dataDir, "--password-file", pwFile, u.name).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("switchboard user add %s: %w\n%s", u.name, err, out)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return users, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type procStatus struct {
	rssKiB int64 // VmRSS: resident now
	hwmKiB int64 // VmHWM: peak resident
}

// readProcStatus reads the memory figures of pid from /proc (Linux).
func readProcStatus(pid int) (procStatus, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, fmt.Errorf("read server memory: %w", err)
	}
	defer f.Close()
	var st procStatus
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &st.rssKiB
		case "VmHWM":
			dst = &st.hwmKiB
		default:
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return procStatus{}, fmt.Errorf("parse /proc/%d/status %s: %w", pid, key, err)
		}
		*dst = kib
	}
	if err := sc.Err(); err != nil {
		return procStatus{}, fmt.Errorf("read server memory: %w", err)
	}
	if st.rssKiB == 0 {
		return procStatus{}, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	return st, nil
}

// startPerf records the server's CPU profile with perf(1) when the hidden
// --perf-record flag is set; the returned func stops the recording.
func (b *bench) startPerf() (func(), error) {
	if b.opts.serverPerf == "" {
		return func() {}, nil
	}
	cmd := exec.Command("perf", "record", "-g", "-F", "999", "-o", b.opts.serverPerf, "-p", strconv.Itoa(b.srv.pid()))
	cmd.Stdout, cmd.Stderr = b.errOut, b.errOut
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}, nil
}

// endSuite stops the suite's server, reports how (with the suite's report
// function) and turns the problems seen into the suite's error, printing
// the end of the server log when there are any.
func (b *bench) endSuite(ctx context.Context, report func(format string, args ...any), problems []string) error {
	code, took, stopErr := b.srv.stop(15 * time.Second)
	report("shutdown_ms=%d exit_code=%d", took.Milliseconds(), code)
	if stopErr != nil {
		problems = append(problems, stopErr.Error())
	}
	if ctx.Err() != nil {
		problems = append(problems, "interrupted")
	}
	if len(problems) > 0 {
		b.srv.printLogTail(b.errOut)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
