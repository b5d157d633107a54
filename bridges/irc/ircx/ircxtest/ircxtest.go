// Package ircxtest starts a real IRC server (ngircd, from the Debian
// package; or InspIRCd 3 with Atheme services for IRCv3 and SASL, see
// StartInspIRCd) on a loopback port for tests, and offers a scripted IRC
// user on gopkg.in/irc.v3 to see what IRC users see. The IRC bridge's
// tests use it too.
package ircxtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/internal/testpeer"
	"gopkg.in/irc.v3"
)

// Binary is where Debian's ngircd package installs the server.
const Binary = "/usr/sbin/ngircd"

// ServerName is the test server's name (the prefix of its numerics).
const ServerName = "irc.test"

// Server is a running ngircd, configured for bridge tests: no connection
// limit per address (MaxConnectionsIP = 0), no channel limit per user
// (MaxJoins = 0), nicks up to 30 bytes, no penalty delays
// (MaxPenaltyTime = 0, so that the client's flood control is what is
// measured), no DNS, ident or PAM lookups. It runs as nobody when the
// test runs as root.
type Server struct {
	// Addr is the server's host:port on 127.0.0.1.
	Addr string
	// Network is the NETWORK announced in ISUPPORT.
	Network string
	// TLSAddr is the TLS port's host:port and CertPEM its self-signed
	// certificate, with Options.TLS.
	TLSAddr string
	CertPEM []byte

	t      testing.TB
	dir    string
	config string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
	paused bool
}

// Options tune the server; the zero value is fine.
type Options struct {
	// PingTimeout and PongTimeout are the server's keepalive of its
	// clients (0: 120 s, 20 s).
	PingTimeout, PongTimeout time.Duration
	// ExtraOptions are appended to the [Options] section.
	ExtraOptions string
	// Password is the server password (PASS) clients must give.
	Password string
	// TLS adds a TLS port (Server.TLSAddr) with a self-signed
	// certificate for ServerName and 127.0.0.1 (Server.CertPEM).
	TLS bool
}

// Start starts ngircd with a temporary configuration on a free loopback
// port; it is stopped when the test ends. Without /usr/sbin/ngircd the
// test is skipped, or fails when CI=true.
func Start(t testing.TB, opts *Options) *Server {
	t.Helper()
	testpeer.RequireBinary(t, Binary, "ngircd")
	if opts == nil {
		opts = &Options{}
	}
	ping, pong := opts.PingTimeout, opts.PongTimeout
	if ping <= 0 {
		ping = 120 * time.Second
	}
	if pong <= 0 {
		pong = 20 * time.Second
	}

	// Not t.TempDir: its parent is 0700, and nobody must read the config.
	dir, err := os.MkdirTemp("", "ircxtest-ngircd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = nobody(t)
	}
	if err := os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}

	s := &Server{t: t, dir: dir, Network: "SwitchboardTest", Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))}
	_, port, _ := net.SplitHostPort(s.Addr)
	s.config = filepath.Join(dir, "ngircd.conf")
	conf := fmt.Sprintf(`[Global]
	Name = %s
	Info = Switchboard test server
	Network = %s
	Listen = 127.0.0.1
	Ports = %s
	MotdPhrase = "Switchboard test server"
	PidFile = %s
	Password = %s
[Limits]
	MaxConnections = 0
	MaxConnectionsIP = 0
	MaxJoins = 0
	MaxNickLength = 30
	MaxPenaltyTime = 0
	PingTimeout = %d
	PongTimeout = %d
[Options]
	DNS = no
	Ident = no
	PAM = no
	IncludeDir = %s
	OperCanUseMode = yes
%s
`, ServerName, s.Network, port, filepath.Join(dir, "ngircd.pid"), opts.Password, int(ping.Seconds()), int(pong.Seconds()),
		filepath.Join(dir, "conf.d"), opts.ExtraOptions)
	if opts.TLS {
		s.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		_, tlsPort, _ := net.SplitHostPort(s.TLSAddr)
		var key []byte
		s.CertPEM, key = selfSigned(t)
		certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		for file, data := range map[string][]byte{certFile: s.CertPEM, keyFile: key} {
			// Readable by nobody: a throwaway key.
			if err := os.WriteFile(file, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		conf += fmt.Sprintf("[SSL]\n\tCertFile = %s\n\tKeyFile = %s\n\tPorts = %s\n", certFile, keyFile, tlsPort)
	}
	if err := os.WriteFile(s.config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("ngircd log:\n%s", s.Log())
		}
	})
	s.Start()
	return s
}

func nobody(t testing.TB) (uid, gid int) {
	u, err := lookupNobody()
	if err != nil {
		t.Fatalf("ircxtest: running the server as nobody: %v", err)
	}
	return u.uid, u.gid
}

type unixUser struct{ uid, gid int }

// lookupNobody returns the user the servers run as when the tests run as
// root (ngircd and InspIRCd refuse to run as root).
func lookupNobody() (unixUser, error) {
	u, err := user.Lookup("nobody")
	if err != nil {
		return unixUser{}, err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return unixUser{}, fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return unixUser{}, fmt.Errorf("gid %q: %w", u.Gid, err)
	}
	return unixUser{uid, gid}, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start starts the server again after Stop (a restart keeps the port)
// and waits until it accepts connections.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		s.t.Fatal("ircxtest: the server is running already")
	}
	// Through sh to raise the open files limit to its maximum: a child
	// of Go gets the soft limit Go started with (often 1024), too few for
	// thousands of puppets. exec keeps the PID, for the signals.
	cmd := exec.Command("/bin/sh", "-c", `ulimit -n "$(ulimit -H -n)" 2>/dev/null; exec "$0" "$@"`,
		Binary, "--nodaemon", "--passive", "--config", s.config)
	if os.Geteuid() == 0 {
		uid, gid := nobody(s.t)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	if s.log == nil {
		s.log = &bytes.Buffer{}
	}
	w := &lockedWriter{mu: &s.mu, buf: s.log}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.t.Fatalf("ircxtest: start ngircd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited, s.paused = cmd, exited, false
	s.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			s.t.Fatalf("ircxtest: ngircd exited at start:\n%s", s.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("ircxtest: ngircd does not accept connections on %s: %v\n%s", s.Addr, err, s.Log())
		}
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 5 s) and waits for
// it to exit; every client is disconnected. Start starts it again.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited, paused := s.cmd, s.exited, s.paused
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	if paused {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart stops and starts the server on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

// Pause freezes the server (SIGSTOP): connections stay open but nothing
// is answered, as with a dead link. Resume (or Stop) undoes it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP, true) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatal("ircxtest: the server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("ircxtest: signal ngircd: %v", err)
	}
	s.paused = paused
}

// Log returns what the server printed.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// Client is a scripted IRC user: a plain gopkg.in/irc.v3 client (no
// capabilities) whose every message is kept for Expect.
type Client struct {
	Nick string

	t      testing.TB
	c      *irc.Client
	cancel context.CancelFunc
	done   chan struct{}
	msgs   chan *irc.Message
}

// Dial connects a Client as nick and waits until it is registered; it is
// closed when the test ends.
func Dial(t testing.TB, addr, nick string) *Client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("ircxtest: dial %s: %v", addr, err)
	}
	cl := &Client{Nick: nick, t: t, done: make(chan struct{}), msgs: make(chan *irc.Message, 4096)}
	cl.c = irc.NewClient(nc, irc.ClientConfig{
		Nick: nick, User: nick, Name: "ircxtest " + nick,
		Handler: irc.HandlerFunc(func(_ *irc.Client, m *irc.Message) {
			select {
			case cl.msgs <- m:
			default:
				t.Errorf("ircxtest: %s: more than 4096 unread messages", nick)
			}
		}),
	})
	ctx, cancel := context.WithCancel(context.Background())
	cl.cancel = cancel
	go func() { _ = cl.c.RunContext(ctx); close(cl.done) }()
	t.Cleanup(cl.Close)
	cl.Expect(10*time.Second, func(m *irc.Message) bool { return m.Command == "376" || m.Command == "422" })
	return cl
}

// Send writes a raw line, e.g. "JOIN #room" or "PRIVMSG #room :hi".
func (cl *Client) Send(line string) {
	cl.t.Helper()
	if err := cl.c.Write(line); err != nil {
		cl.t.Fatalf("ircxtest: %s: send %q: %v", cl.Nick, line, err)
	}
}

// Sendf is Send with fmt.Sprintf.
func (cl *Client) Sendf(format string, args ...any) { cl.Send(fmt.Sprintf(format, args...)) }

// Expect returns the first message, read from now on or received and not
// yet expected, for which match is true; the messages before it are
// dropped. It fails the test after timeout.
func (cl *Client) Expect(timeout time.Duration, match func(*irc.Message) bool) *irc.Message {
	cl.t.Helper()
	m, err := cl.Next(timeout, match)
	if err != nil {
		cl.t.Fatalf("ircxtest: %s: %v", cl.Nick, err)
	}
	return m
}

// ErrTimeout is Next's error when nothing matched in time.
var ErrTimeout = errors.New("nothing matched in time")

// Next is Expect returning ErrTimeout instead of failing the test.
func (cl *Client) Next(timeout time.Duration, match func(*irc.Message) bool) (*irc.Message, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select { // what was received first, also after the end
		case m := <-cl.msgs:
			if match(m) {
				return m, nil
			}
			continue
		default:
		}
		select {
		case m := <-cl.msgs:
			if match(m) {
				return m, nil
			}
		case <-t.C:
			return nil, ErrTimeout
		case <-cl.done:
			return nil, errors.New("the connection ended")
		}
	}
}

// Close disconnects the client.
func (cl *Client) Close() {
	cl.cancel()
	<-cl.done
}

// selfSigned returns a certificate and key, in PEM, for ServerName and
// 127.0.0.1.
func selfSigned(t testing.TB) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: ServerName},
		DNSNames:     []string{ServerName},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
