// Package testkit runs the end-to-end tests of our bridges, bots and
// examples against a real Switchboard homeserver: it starts one in-process
// on a loopback port with a temporary database, registers the appservice
// under test the way an operator would (a registration file and a reload),
// and hands out logged-in mautrix clients, so a test asserts what a Matrix
// user would see.
//
// A real homeserver rather than a mock, because what breaks bridges is the
// behaviour a mock leaves out: namespace checks, transaction retries,
// membership and power-level rules. The framework itself never imports the
// homeserver (a bridge talks to any homeserver over HTTP); this test-only
// package is the one place that does.
//
// The database is a fresh SQLite file by default. To run a test on
// PostgreSQL as well, pass internal/testdb's URIs, and hand the package's
// TestMain to testdb.Main so the throwaway cluster is stopped:
//
//	func TestMain(m *testing.M) { testdb.Main(m) }
//
//	func TestBridge(t *testing.T) {
//		testdb.ForEach(t, func(t *testing.T, uri string) {
//			kit := testkit.Start(t, testkit.WithDatabase(uri))
//			…
//		})
//	}
package testkit

import (
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// Kit is a running test homeserver and what has been registered on it.
//
// Its methods fail the test (the one given to Start) on error, so a test
// reads as a list of steps. They are meant for the test's goroutine;
// Restart in particular must not overlap other calls.
type Kit struct {
	// URL is the base URL of the client-server API. It stays the same
	// across Restart.
	URL string
	// ServerName is the homeserver's server name, the part of user IDs and
	// aliases after the colon.
	ServerName string
	// HS is the homeserver process of the moment, for what a test needs
	// beyond the client API (HS.HS.Pusher.Stats(), HS.CreateUser for an
	// admin). Restart replaces it.
	HS *hstest.Server

	t testing.TB
}

// Option adjusts Start.
type Option func(*options)

type options struct {
	dbURI  string
	mutate []func(*config.Config)
}

// WithDatabase runs the homeserver on the database at uri ("sqlite:PATH" or
// "postgres://…", as internal/testdb hands them out) instead of a fresh
// SQLite file in t.TempDir().
func WithDatabase(uri string) Option {
	return func(o *options) { o.dbURI = uri }
}

// WithConfig adjusts the homeserver's config before it starts. hstest has
// turned rate limits off and made password hashing cheap before fn runs.
func WithConfig(fn func(*config.Config)) Option {
	return func(o *options) { o.mutate = append(o.mutate, fn) }
}

// restartShutdownTimeout bounds how long Restart waits for in-flight
// requests. The homeserver lets a /sync long poll run to its timeout when
// shutting down, so a test with a syncing client would otherwise wait for
// http.shutdown_timeout (10s by default) at every Restart.
const restartShutdownTimeout = 2 * time.Second

// Start runs a homeserver for the test and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Kit {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.dbURI == "" {
		o.dbURI = testdb.SQLiteURI(t)
	}
	k := &Kit{t: t}
	k.HS = hstest.Start(t, o.dbURI, func(c *config.Config) {
		c.HTTP.ShutdownTimeout = config.Duration(restartShutdownTimeout)
		for _, fn := range o.mutate {
			fn(c)
		}
	})
	k.URL, k.ServerName = k.HS.URL, k.HS.Config.ServerName
	return k
}

// Restart stops the homeserver as SIGTERM would and starts a new process
// on the same data directory, database and address: what a bot's restart
// test needs to see that nothing was lost and that the bot reconnects.
// Clients made before keep working (their access tokens are in the
// database).
func (k *Kit) Restart() {
	k.t.Helper()
	k.HS = k.HS.Restart()
}

// StopHomeserver shuts the homeserver down (as SIGTERM would) until
// StartHomeserver: what a bridge does while its homeserver is away.
func (k *Kit) StopHomeserver() {
	k.t.Helper()
	k.HS.Stop()
}

// StartHomeserver starts the homeserver stopped by StopHomeserver again,
// on the same data, database and address.
func (k *Kit) StartHomeserver() {
	k.t.Helper()
	k.HS = k.HS.StartAgain()
}

// NewUser creates an account with the given localpart and returns a client
// logged in to it.
func (k *Kit) NewUser(localpart string) *mautrix.Client {
	k.t.Helper()
	return k.HS.NewUser(localpart)
}

// ASClient returns a client that acts as the appservice's sender user with
// its as_token, as the bot would. Set SetAppServiceUserID and UserID on it to
// act as one of the appservice's ghosts.
func (k *Kit) ASClient(reg *appservice.Registration) *mautrix.Client {
	k.t.Helper()
	cli := k.HS.Client()
	cli.AccessToken = reg.AppToken
	cli.UserID = id.NewUserID(reg.SenderLocalpart, k.ServerName)
	return cli
}
