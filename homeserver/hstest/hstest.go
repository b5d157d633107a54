// Package hstest starts real Switchboard homeservers for the homeserver's
// own end-to-end tests: a fresh data directory and database, a loopback
// listener, and mautrix clients talking real HTTP to it. (Bridges and bots
// get the same through framework/testkit.)
package hstest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver"
	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/config"
)

// SharedSecret is the shared-registration secret of every test server.
const SharedSecret = "hstest-shared-secret-0123456789"

// Server is a running test homeserver.
type Server struct {
	URL    string
	Config *config.Config
	HS     *homeserver.Homeserver
	t      testing.TB
	addr   string // the listener's address, which Restart binds again
	stop   func()
}

// Start runs a homeserver on a free loopback port with the database at
// dbURI (see internal/testdb). mutate may adjust the config before start;
// by default rate limits are off and password hashing is cheap so tests
// are fast. The server stops when the test ends.
func Start(t testing.TB, dbURI string, mutate func(*config.Config)) *Server {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg := config.Default()
	cfg.Listen = ln.Addr().String()
	cfg.PublicURL = "http://" + cfg.Listen
	cfg.Database = dbURI
	cfg.Registration.SharedSecret = SharedSecret
	cfg.Auth.PasswordHashing = config.Argon2{MemoryKiB: 1024, Iterations: 1, Parallelism: 1}
	off := config.RateLimit{}
	cfg.RateLimits = config.RateLimitsConfig{Login: off, FailedLogin: off, Register: off, AdminRegister: off}
	if mutate != nil {
		mutate(cfg)
	}
	if err := config.Init(dir, cfg); err != nil {
		ln.Close()
		t.Fatalf("init config: %v", err)
	}
	return serve(t, dir, ln)
}

// serve starts a homeserver from the config in dir on ln and returns once
// it answers requests.
func serve(t testing.TB, dir string, ln net.Listener) *Server {
	t.Helper()
	cfg, err := config.Load(dir)
	if err != nil {
		ln.Close()
		t.Fatalf("load config: %v", err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	hs, err := homeserver.New(ctx, cfg, log)
	if err != nil {
		cancel()
		ln.Close()
		t.Fatalf("start homeserver: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ctx, ln) }()
	srv := &Server{URL: cfg.PublicURL, Config: cfg, HS: hs, t: t, addr: ln.Addr().String()}
	var once sync.Once
	srv.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, http.ErrServerClosed) {
					t.Errorf("homeserver stopped with error: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("homeserver did not stop within 15s")
			}
		})
	}
	t.Cleanup(srv.stop)
	// Serve starts the appservice pusher before it accepts a connection:
	// once the server answers, it is fully up, and a test that ends now
	// does not cancel a half-started server.
	// (Asked at the listener: a test's public_url need not be reachable.)
	probe, err := mautrix.NewClient("http://"+srv.addr, "", "")
	if err == nil {
		probe.Client = &http.Client{Timeout: 30 * time.Second}
		_, err = probe.Versions(context.Background())
	}
	if err != nil {
		t.Fatalf("homeserver does not answer: %v", err)
	}
	return srv
}

// Restart stops the server as SIGTERM would and starts a new process on
// the same data directory (config, signing key, DATA/appservices/), the
// same database and the same address, as an operator's restart does;
// clients and appservices keep their URL. It returns the new server, which
// stops when the test ends.
func (s *Server) Restart() *Server {
	s.t.Helper()
	s.Stop()
	return s.StartAgain()
}

// StartAgain starts a new process on the stopped server's data directory,
// database and address (see Restart); a test stops the server, checks what
// its clients and appservices do while it is down, then starts it again.
func (s *Server) StartAgain() *Server {
	s.t.Helper()
	// The port was released a moment ago; another process could take it
	// first, which on loopback in a test is rare enough to retry briefly.
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ln, err = net.Listen("tcp", s.addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		s.t.Fatalf("listen again on %s: %v", s.addr, err)
	}
	return serve(s.t, s.Config.DataDir, ln)
}

// Stop shuts the server down as SIGTERM would (in-flight requests finish,
// the database closes); a test may then start another on the same database.
func (s *Server) Stop() { s.stop() }

// Client returns an unauthenticated mautrix client for the server.
func (s *Server) Client() *mautrix.Client {
	s.t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		s.t.Fatalf("new client: %v", err)
	}
	cli.Client = &http.Client{Timeout: 30 * time.Second}
	return cli
}

// CreateUser makes an account directly (as `switchboard user add` does).
func (s *Server) CreateUser(name, password string, admin bool) id.UserID {
	s.t.Helper()
	userID, err := s.HS.Accounts.UserIDFor(name)
	if err != nil {
		s.t.Fatalf("user ID for %q: %v", name, err)
	}
	if err := s.HS.Accounts.CreateUser(context.Background(), accounts.NewUser{UserID: userID, Password: password, Admin: admin}); err != nil {
		s.t.Fatalf("create user %s: %v", userID, err)
	}
	return userID
}

// Login logs a user in with a password and returns a client that uses the
// new access token.
func (s *Server) Login(name, password string) *mautrix.Client {
	s.t.Helper()
	cli := s.Client()
	_, err := cli.Login(context.Background(), &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: name},
		Password:         password,
		StoreCredentials: true,
	})
	if err != nil {
		s.t.Fatalf("login %s: %v", name, err)
	}
	return cli
}

// NewUser creates an account and returns a logged-in client for it.
func (s *Server) NewUser(name string) *mautrix.Client {
	s.t.Helper()
	const password = "correct horse battery staple"
	s.CreateUser(name, password, false)
	return s.Login(name, password)
}
