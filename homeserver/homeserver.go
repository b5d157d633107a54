// Package homeserver assembles Switchboard's Matrix homeserver from its
// subsystems (storage, accounts, clientapi, …) and runs its HTTP listeners.
// It is the New(cfg) → Run(ctx) entry point `switchboard run` and the tests
// use; subsystems never reach each other through it.
package homeserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"go.mau.fi/util/exhttp"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/appservice"
	"github.com/switchboard-im/switchboard/homeserver/clientapi"
	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/media"
	"github.com/switchboard-im/switchboard/homeserver/notifier"
	"github.com/switchboard-im/switchboard/homeserver/push"
	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/typing"
	"github.com/switchboard-im/switchboard/internal/dbopen"
)

// Homeserver is one homeserver process.
type Homeserver struct {
	Config   *config.Config
	DB       *storage.DB
	Accounts *accounts.Service
	Notifier *notifier.Notifier
	Rooms    *rooms.Service
	Typing   *typing.Tracker
	Pusher   *appservice.Pusher
	Media    *media.Repo
	Push     *push.Service

	appservices atomic.Pointer[appservice.Registry]

	log     zerolog.Logger
	router  *gin.Engine
	metrics *prometheus.Registry
}

// New opens the database (upgrading its schema) and builds the router.
func New(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*Homeserver, error) {
	key, err := config.LoadSigningKey(cfg.ResolvePath(cfg.SigningKeyPath))
	if err != nil {
		return nil, err
	}
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir, cfg.DatabaseMaxConns, log)
	if err != nil {
		return nil, err
	}
	mediaRepo, err := media.New(db, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	n := notifier.New(nil)
	// Several homeserver processes may share a PostgreSQL database: a write
	// in one must wake long-polling syncs in the others, which the notifier
	// does through LISTEN/NOTIFY (Serve closes it). SQLite has one process.
	if dialect, dsn, _ := dbopen.Split(cfg.Database); dialect == "postgres" {
		if err := n.ConnectPostgres(ctx, dsn, log.With().Str("component", "notifier").Logger()); err != nil {
			db.Close()
			return nil, fmt.Errorf("sync notifier: %w", err)
		}
	}
	hs := &Homeserver{
		Config:   cfg,
		DB:       db,
		Accounts: accounts.New(db, cfg),
		Notifier: n,
		Rooms:    rooms.New(db, cfg.ServerName, key, n, log.With().Str("component", "rooms").Logger()),
		Typing:   typing.New(n),
		Media:    mediaRepo,
		log:      log,
		metrics:  prometheus.NewRegistry(),
	}
	hs.Pusher = appservice.NewPusher(db, hs.Rooms, nil, n, cfg.ServerName,
		log.With().Str("component", "appservice_pusher").Logger(), nil)
	hs.Pusher.Typing = hs.Typing
	pushClient, err := push.NewGatewayClient(cfg.Push.AllowedNetworks)
	if err != nil {
		hs.Notifier.Close()
		db.Close()
		return nil, err
	}
	hs.Push = push.NewService(db, hs.Rooms, n, cfg.ServerName, log.With().Str("component", "push").Logger(), pushClient)
	if err := hs.ReloadAppservices(ctx); err != nil {
		hs.Notifier.Close()
		db.Close()
		return nil, err
	}
	hs.metrics.MustRegister(hs.Pusher.Collector())
	hs.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hs.router = hs.buildRouter()
	return hs, nil
}

func (hs *Homeserver) buildRouter() *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// Matrix IDs may contain '/' (percent-encoded) and must reach handlers
	// decoded, and redirects would break POSTs from clients.
	r.UseRawPath = true
	r.UnescapePathValues = true
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	if err := r.SetTrustedProxies(hs.Config.HTTP.TrustedProxies); err != nil {
		// Validated in config; unreachable unless validation drifts.
		hs.log.Err(err).Msg("Invalid trusted proxies")
	}
	r.Use(hs.requestLog(), hs.recoverPanics(), hs.instrument(), cors, clientapi.ValidateRequestStrings)
	clientapi.New(clientapi.Deps{
		Config: hs.Config, DB: hs.DB, Accounts: hs.Accounts, Notifier: hs.Notifier, Rooms: hs.Rooms, Typing: hs.Typing, Log: hs.log,
		Appservices: hs.Appservices, Media: hs.Media,
	}).Register(r)
	r.NoRoute(clientapi.NotFound)
	r.NoMethod(clientapi.MethodNotAllowed)
	return r
}

// Appservices returns the current appservice registrations.
func (hs *Homeserver) Appservices() *appservice.Registry { return hs.appservices.Load() }

// ReloadAppservices reads and validates the registrations again (at start
// and on SIGHUP). On error the previous set stays in force. Each
// appservice's sender user is created if missing.
func (hs *Homeserver) ReloadAppservices(ctx context.Context) error {
	users, err := hs.DB.ListUsers(ctx)
	if err != nil {
		return err
	}
	owner := map[id.UserID]string{}
	var live []id.UserID
	for _, u := range users {
		if u.AppserviceID != "" {
			owner[u.UserID] = u.AppserviceID
		}
		if !u.Deactivated {
			live = append(live, u.UserID)
		}
	}
	reg, err := appservice.Load(ctx, hs.Config.DataDir, hs.Config.AppserviceRegistrations, hs.Config.ServerName,
		func(context.Context) ([]id.UserID, error) { return live, nil },
		func(userID id.UserID, asID string) bool { return owner[userID] == asID })
	if err != nil {
		return err
	}
	for _, as := range reg.All() {
		sender := as.SenderUserID(hs.Config.ServerName)
		err := hs.Accounts.CreateUser(ctx, accounts.NewUser{UserID: sender, AppserviceID: as.ID(), UserType: "bot"})
		if err != nil && !errors.Is(err, accounts.ErrUserInUse) {
			return fmt.Errorf("appservice %s: create sender %s: %w", as.ID(), sender, err)
		}
	}
	hs.appservices.Store(reg)
	hs.Pusher.SetRegistry(reg)
	if n := len(reg.All()); n > 0 {
		hs.log.Info().Int("count", n).Msg("Loaded appservice registrations")
	}
	return nil
}

// Handler is the client-facing HTTP handler (for tests and embedding).
func (hs *Homeserver) Handler() http.Handler { return hs.router }

// cors answers preflights without running endpoint logic and puts the
// spec's CORS headers on every response, errors included.
func cors(c *gin.Context) {
	exhttp.AddCORSHeaders(c.Writer)
	// AddCORSHeaders also sets a sandbox CSP meant for media; JSON APIs
	// don't need it and it confuses some browser devtools.
	c.Writer.Header().Del("Content-Security-Policy")
	if c.Request.Method == http.MethodOptions {
		c.AbortWithStatus(http.StatusOK)
	}
}

// requestLog gives each request a logger in its context and logs the
// outcome. Only the path is logged: query strings may carry access tokens.
func (hs *Homeserver) requestLog() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		log := hs.log.With().Str("req_id", random.String(8)).Logger()
		c.Request = c.Request.WithContext(log.WithContext(c.Request.Context()))
		c.Next()
		status := c.Writer.Status()
		var evt *zerolog.Event
		logger := zerolog.Ctx(c.Request.Context())
		switch {
		case status >= 500:
			evt = logger.Error()
		case status >= 400:
			evt = logger.Info()
		default:
			evt = logger.Debug()
		}
		evt.Str("method", c.Request.Method).
			Str("path", c.Request.URL.Path).
			Int("status", status).
			Str("ip", c.ClientIP()).
			Dur("duration", time.Since(start)).
			Msg("Request")
	}
}

func (hs *Homeserver) recoverPanics() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				zerolog.Ctx(c.Request.Context()).Error().
					Str("panic", fmt.Sprint(p)).Bytes("stack", debug.Stack()).
					Msg("Panic while handling request")
				if !c.Writer.Written() {
					e := mautrix.MUnknown.WithMessage("Internal server error")
					c.AbortWithStatusJSON(http.StatusInternalServerError, &e)
				}
			}
		}()
		c.Next()
	}
}

func (hs *Homeserver) instrument() gin.HandlerFunc {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_http_requests_total", Help: "Client-server API requests by route and status.",
	}, []string{"method", "route", "status"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "switchboard_http_request_duration_seconds", Help: "Client-server API latency by route.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"method", "route"})
	hs.metrics.MustRegister(requests, latency)
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		requests.WithLabelValues(c.Request.Method, route, fmt.Sprint(c.Writer.Status())).Inc()
		latency.WithLabelValues(c.Request.Method, route).Observe(time.Since(start).Seconds())
	}
}

// Run serves until ctx is cancelled, then lets in-flight requests finish
// (up to http.shutdown_timeout) and closes the database.
func (hs *Homeserver) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", hs.Config.Listen)
	if err != nil {
		hs.Notifier.Close() // stops the PostgreSQL wake-up exchange, if any
		hs.DB.Close()
		return fmt.Errorf("listen: %w", err)
	}
	return hs.Serve(ctx, ln)
}

// Serve is Run on an already-open listener.
func (hs *Homeserver) Serve(ctx context.Context, ln net.Listener) error {
	defer hs.DB.Close()
	// After in-flight requests finish (their wake-ups are flushed to the
	// other processes) and before the database closes.
	defer hs.Notifier.Close()
	defer hs.Typing.Close()
	// Stopped before the notifier and the database close; an unfinished
	// transaction is resent with the same ID at the next start.
	defer hs.Pusher.Stop()
	if err := hs.Pusher.Start(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("appservice pusher: %w", err)
	}
	defer hs.Push.Stop()
	if err := hs.Push.Start(ctx); err != nil {
		ln.Close()
		return fmt.Errorf("push worker: %w", err)
	}
	srv := &http.Server{
		Handler:           hs.router,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       hs.Config.HTTP.ReadTimeout.D(),
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ErrorLog:          nil,
	}
	servers := []*http.Server{srv}
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(ln) }()
	if hs.Config.Metrics.Enabled {
		mln, err := net.Listen("tcp", hs.Config.Metrics.Listen)
		if err != nil {
			srv.Close()
			return fmt.Errorf("metrics.listen: %w", err)
		}
		msrv := &http.Server{Handler: promhttp.HandlerFor(hs.metrics, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, msrv)
		go func() { errs <- msrv.Serve(mln) }()
		hs.log.Info().Str("address", mln.Addr().String()).Msg("Serving Prometheus metrics at /metrics")
	}
	go hs.sweep(ctx)
	hs.log.Info().Str("address", ln.Addr().String()).Str("server_name", hs.Config.ServerName).Msg("Homeserver listening")

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errs:
	}
	hs.log.Info().Msg("Shutting down: letting in-flight requests finish")
	shutCtx, cancel := context.WithTimeout(context.Background(), hs.Config.HTTP.ShutdownTimeout.D())
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(shutCtx); err != nil {
			hs.log.Warn().Err(err).Msg("Graceful shutdown timed out; closing connections")
			s.Close()
		}
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// sweep expires stale UIA sessions and nonces once a minute.
func (hs *Homeserver) sweep(ctx context.Context) {
	ticker := time.NewTicker(time.Minute)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			cutoff := time.Now().Add(-clientapi.UIASessionLifetime).UnixMilli()
			if n, err := hs.DB.ExpireUIASessions(ctx, cutoff); err != nil && ctx.Err() == nil {
				hs.log.Warn().Err(err).Msg("Failed to expire auth sessions")
			} else if n > 0 {
				hs.log.Debug().Int64("count", n).Msg("Expired auth sessions")
			}
		}
	}
}
