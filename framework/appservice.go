// Package framework is Switchboard's appservice SDK: the runtime that bots
// (framework/bot) and bridges (framework/bridge) are built on, over
// maunium.net/go/mautrix's appservice package.
//
// An Appservice loads its config, writes its registration file when there
// is none, opens its database (SQLite or PostgreSQL, with the framework's
// tables and mautrix's SQL state store), serves the appservice HTTP API and
// hands every event the homeserver pushes to the handlers registered with
// OnEvent:
//
//   - Transactions are deduplicated persistently: a transaction is written
//     to the database (its ID and its events) before the homeserver gets
//     its 200, so one resent after a lost answer or a restart is
//     acknowledged without being processed again, and events accepted but
//     not yet handled when the process stops are handled after the next
//     start (see inbox.go).
//   - Events of one room are handled in order, one at a time; rooms are
//     handled in parallel (Config.Workers).
//   - The bot user is registered and given its profile at start; ghosts on
//     demand (EnsureGhost), with their profile set only when it changes.
//
// The framework talks to the homeserver only through the spec's HTTP APIs,
// so whatever is built on it runs against any homeserver.
package framework

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/switchboard-im/switchboard/internal/dbopen"
)

//go:embed upgrades/*.sql
var upgrades embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgrades, "upgrades").Finish()

// EventHandler handles one event pushed by the homeserver. Handlers run on
// the room's worker: they may block (events of other rooms go on), and the
// next event of the same room waits for them.
type EventHandler func(ctx context.Context, evt *event.Event)

// Appservice is a running appservice: see the package documentation.
type Appservice struct {
	Config       *Config
	Registration *appservice.Registration
	Log          zerolog.Logger
	// DB is the appservice's database; bots and bridges add their own
	// tables with DB.Child (their own version table).
	DB *dbutil.Database
	// AS is mautrix's appservice: intents, clients, query handler.
	AS         *appservice.AppService
	StateStore *sqlstatestore.SQLStateStore
	// Metrics are the appservice's Prometheus metrics (in the default
	// registry); bridges report their messages and state there too.
	Metrics *Metrics

	handlers []EventHandler
	inbox    *inbox
	// ghostLocks serialise EnsureGhost per ghost (striped by user ID).
	ghostLocks [64]sync.Mutex
	// beforeClose run in Stop once no handler runs any more, before the
	// database closes (a bridge stops its network there).
	beforeClose []func()

	mu       sync.Mutex
	listener net.Listener // bound by Bind, taken by Start
	server   *http.Server
	serveErr chan error
	started  bool
	stopped  bool
	stopBg   context.CancelFunc
	bgDone   sync.WaitGroup
}

// New validates cfg, writes the registration file if it is missing, and
// opens the database. Nothing listens until Start.
func New(ctx context.Context, cfg *Config, log zerolog.Logger) (*Appservice, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	reg, written, err := cfg.EnsureRegistration()
	if err != nil {
		return nil, err
	}
	if written {
		log.Warn().Str("path", cfg.path(cfg.Registration)).
			Msg("Wrote the appservice registration: the homeserver must load it (e.g. `switchboard appservice add FILE`)")
	}
	db, err := OpenDB(ctx, cfg.Database, cfg.DataDir, cfg.ID, log)
	if err != nil {
		return nil, err
	}
	stateStore := sqlstatestore.NewSQLStateStore(db, dbutil.ZeroLogger(log.With().Str("component", "state_store").Logger()), false)
	if err := stateStore.Upgrade(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database: upgrade state store: %w", err)
	}
	as := appservice.Create()
	as.HomeserverDomain = cfg.ServerName
	as.Registration = reg
	as.StateStore = stateStore
	as.Log = log.With().Str("component", "appservice").Logger()
	if err := as.SetHomeserverURL(cfg.HomeserverURL); err != nil {
		db.Close()
		return nil, fmt.Errorf("homeserver_url: %w", err)
	}
	// Before any intent exists: they share as.HTTPClient, so all of them
	// honour retry_after_ms and back off on 5xx (see retry.go).
	installRetry(as, RetryOptions{})
	a := &Appservice{
		Config:       cfg,
		Registration: reg,
		Log:          log,
		DB:           db,
		AS:           as,
		StateStore:   stateStore,
		Metrics:      NewMetrics(nil, cfg.ID),
	}
	a.inbox = newInbox(a)
	return a, nil
}

// OpenDB opens a database ("sqlite:PATH", relative to dataDir, or
// "postgres://…") with the framework's tables. owner names the component
// (one database per appservice). New uses it; so do bots in sync mode.
func OpenDB(ctx context.Context, uri, dataDir, owner string, log zerolog.Logger) (*dbutil.Database, error) {
	db, err := dbopen.Open(ctx, dbopen.Options{URI: uri, DataDir: dataDir, Owner: owner, Log: log})
	if err != nil {
		return nil, err
	}
	db.UpgradeTable = upgradeTable
	if err := db.Upgrade(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database: upgrade schema: %w", err)
	}
	return db, nil
}

// OnEvent adds a handler for every event (timeline, state, ephemeral and
// to-device). Add handlers before Start.
func (a *Appservice) OnEvent(h EventHandler) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		panic("framework: OnEvent after Start")
	}
	a.handlers = append(a.handlers, h)
}

// BeforeClose adds a function Stop runs after the last event was handled
// and before the database closes: a bridge disconnects its remote side
// there, so that events still being handled can be delivered and remote
// events arriving meanwhile can still be written down.
func (a *Appservice) BeforeClose(f func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.beforeClose = append(a.beforeClose, f)
}

// Bot is the bot user's intent.
func (a *Appservice) Bot() *appservice.IntentAPI { return a.AS.BotIntent() }

// Intent returns the intent of one of the appservice's users.
func (a *Appservice) Intent(userID id.UserID) *appservice.IntentAPI { return a.AS.Intent(userID) }

// Start handles the events left from the previous run, starts listening
// for transactions and registers the bot user (retrying in the background
// while the homeserver is unreachable). Stop undoes it.
func (a *Appservice) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started || a.stopped {
		return errors.New("framework: already started")
	}
	a.started = true
	ln, err := a.bindLocked()
	if err != nil {
		return err
	}
	a.listener = nil
	if err := a.inbox.start(ctx); err != nil {
		ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_matrix/app/v1/transactions/{txnID}", a.inbox.putTransaction)
	mux.Handle("/", a.AS.Router) // ping, user and alias queries, health
	// Prometheus scrapes the appservice where the homeserver reaches it:
	// the metrics name no user and hold no secret.
	mux.Handle("GET /metrics", promhttp.Handler())
	a.server = &http.Server{Handler: a.checkToken(mux), ReadHeaderTimeout: 30 * time.Second}
	a.serveErr = make(chan error, 1)
	go func() { a.serveErr <- a.server.Serve(ln) }()
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.stopBg = cancel
	a.bgDone.Add(1)
	go func() {
		defer a.bgDone.Done()
		a.ensureBot(bg)
	}()
	a.Log.Info().Str("listen", ln.Addr().String()).Str("bot", string(a.Config.BotID())).Msg("Appservice started")
	return nil
}

// Bind opens the appservice's listener ahead of Start. With port 0 in the
// listen address, a free port is taken and, when the URL was derived from
// the listen address, the URL and the registration file are updated to it:
// a component started beside the homeserver (switchboard run) binds before
// the homeserver loads the registration, so no fixed port is needed.
func (a *Appservice) Bind() (net.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ln, err := a.bindLocked()
	if err != nil {
		return nil, err
	}
	return ln.Addr(), nil
}

func (a *Appservice) bindLocked() (net.Listener, error) {
	if a.listener != nil {
		return a.listener, nil
	}
	ln, err := net.Listen("tcp", a.Config.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if a.Config.urlFromListen && "http://"+a.Config.Listen != "http://"+ln.Addr().String() {
		a.Config.URL = "http://" + ln.Addr().String()
		reg, _, err := a.Config.EnsureRegistration()
		if err != nil {
			ln.Close()
			return nil, err
		}
		*a.Registration = *reg
		a.AS.Registration = a.Registration
	}
	a.listener = ln
	return ln, nil
}

// checkToken makes every /_matrix/app/ request carry the hs_token (spec:
// "Authorization"): compared in constant time, refused with 403
// M_FORBIDDEN otherwise. The legacy access_token query parameter is
// accepted too and moved into the header mautrix's handlers read.
func (a *Appservice) checkToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/_matrix/app/") {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			token = r.URL.Query().Get("access_token")
		}
		if subtle.ConstantTimeCompare([]byte(token), []byte(a.Registration.ServerToken)) != 1 {
			mautrix.MForbidden.WithMessage("Missing or wrong hs_token").WithStatus(http.StatusForbidden).Write(w)
			return
		}
		r.Header.Set("Authorization", "Bearer "+token)
		next.ServeHTTP(w, r)
	})
}

// ensureBot registers the bot user and sets its profile, retrying with
// backoff until it works or the appservice stops.
func (a *Appservice) ensureBot(ctx context.Context) {
	backoff := time.Second
	for {
		err := a.setupBot(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		a.Log.Warn().Err(err).Dur("retry_in", backoff).Msg("Failed to set up the bot user; is the homeserver up and the registration loaded?")
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

func (a *Appservice) setupBot(ctx context.Context) error {
	bot := a.Bot()
	if err := bot.EnsureRegistered(ctx); err != nil {
		return fmt.Errorf("register bot: %w", err)
	}
	var avatar id.ContentURI
	if a.Config.BotAvatar != "" {
		avatar, _ = id.ParseContentURI(a.Config.BotAvatar)
	}
	return a.setProfile(ctx, bot, a.Config.BotDisplayName, avatar)
}

// Run starts the appservice and stops it when ctx ends.
func (a *Appservice) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-a.serveErr:
		a.Stop()
		return fmt.Errorf("appservice HTTP server: %w", err)
	}
	a.Stop()
	return nil
}

// Stop stops accepting transactions (one being received completes), lets
// the handlers finish the events already accepted, records what was
// handled and closes the database. Events not handled by then are handled
// after the next start.
func (a *Appservice) Stop() {
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return
	}
	a.stopped = true
	started := a.started
	if a.listener != nil { // bound, never started
		a.listener.Close()
		a.listener = nil
	}
	a.mu.Unlock()
	if started {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := a.server.Shutdown(ctx); err != nil {
			a.Log.Warn().Err(err).Msg("Appservice HTTP server did not stop cleanly")
		}
		cancel()
		a.stopBg()
		a.bgDone.Wait()
		a.inbox.stop()
	}
	for _, f := range a.beforeClose {
		f()
	}
	if err := a.DB.Close(); err != nil {
		a.Log.Warn().Err(err).Msg("Failed to close the database")
	}
}

// dispatch runs every handler on evt; a handler that panics is logged and
// does not stop the others or the worker.
func (a *Appservice) dispatch(ctx context.Context, evt *event.Event) {
	if evt.Type.Class == event.StateEventType {
		mautrix.UpdateStateStore(ctx, a.StateStore, evt)
	}
	start := time.Now()
	var failed error
	for _, h := range a.handlers {
		func() {
			defer func() {
				if p := recover(); p != nil {
					failed = fmt.Errorf("event handler panicked: %v", p)
					a.Log.Error().Any("panic", p).Stringer("event_id", evt.ID).Str("event_type", evt.Type.Type).
						Stack().Msg("Event handler panicked")
				}
			}()
			h(ctx, evt)
		}()
	}
	a.Metrics.ObserveHandled(evt.Type.Type, time.Since(start), failed)
}
