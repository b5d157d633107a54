// Package clientapi serves the Matrix client-server API (and the
// Synapse-compatible admin endpoints deployment tools use) over gin: request
// parsing, authentication, user-interactive auth, and the spec's error codes.
// Business rules live in the subsystem packages it calls (accounts, …).
package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/appservice"
	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/media"
	"github.com/switchboard-im/switchboard/homeserver/notifier"
	"github.com/switchboard-im/switchboard/homeserver/ratelimit"
	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/syncapi"
	"github.com/switchboard-im/switchboard/homeserver/typing"
)

// Deps are the subsystems the client API calls.
type Deps struct {
	Config   *config.Config
	DB       *storage.DB
	Accounts *accounts.Service
	Notifier *notifier.Notifier
	Rooms    *rooms.Service
	Typing   *typing.Tracker
	Media    *media.Repo
	Log      zerolog.Logger
	// Appservices returns the current registrations (they reload on SIGHUP).
	Appservices func() *appservice.Registry
}

// API holds what the handlers need.
type API struct {
	cfg      *config.Config
	db       *storage.DB
	accounts *accounts.Service
	notifier *notifier.Notifier
	rooms    *rooms.Service
	typing   *typing.Tracker
	media    *media.Repo
	log      zerolog.Logger

	appservices func() *appservice.Registry

	syncOnce   sync.Once
	syncEngine *syncapi.Syncer
	// presenceSeen remembers when a user's sync last confirmed their
	// presence ("user|state" → time), so most syncs skip the presence row.
	presenceSeen sync.Map

	loginLimit       *ratelimit.Limiter // per IP
	failedLoginLimit *ratelimit.Limiter // per account
	registerLimit    *ratelimit.Limiter // per IP
	adminRegLimit    *ratelimit.Limiter // per IP
	hierarchyLimit   *ratelimit.Limiter // per user
	previewLimit     *ratelimit.Limiter // per user, fetches only
}

// New builds the client API.
func New(d Deps) *API {
	cfg := d.Config
	return &API{
		cfg:              cfg,
		db:               d.DB,
		accounts:         d.Accounts,
		notifier:         d.Notifier,
		rooms:            d.Rooms,
		typing:           d.Typing,
		media:            d.Media,
		appservices:      d.Appservices,
		log:              d.Log,
		loginLimit:       ratelimit.New(cfg.RateLimits.Login),
		failedLoginLimit: ratelimit.New(cfg.RateLimits.FailedLogin),
		registerLimit:    ratelimit.New(cfg.RateLimits.Register),
		adminRegLimit:    ratelimit.New(cfg.RateLimits.AdminRegister),
		hierarchyLimit:   ratelimit.New(cfg.RateLimits.Hierarchy),
		previewLimit:     ratelimit.New(cfg.RateLimits.URLPreview),
	}
}

// clientPrefixes are the client-server API path prefixes served. r0 is the
// pre-1.0 name some older bridges and bots still call.
var clientPrefixes = []string{"/_matrix/client/v3", "/_matrix/client/r0"}

// Register mounts every endpoint on the router.
func (a *API) Register(r gin.IRouter) {
	r.GET("/_matrix/client/versions", a.getVersions)
	r.GET("/.well-known/matrix/client", a.getWellKnownClient)
	r.GET("/.well-known/matrix/server", a.getWellKnownServer)
	r.GET("/_matrix/client/v1/register/m.login.registration_token/validity", a.getRegistrationTokenValidity)
	r.GET("/_matrix/client/v1/rooms/:roomID/hierarchy", a.authed(a.getHierarchy))

	for _, prefix := range clientPrefixes {
		g := r.Group(prefix)
		g.GET("/capabilities", a.authed(a.getCapabilities))

		g.POST("/register", a.postRegister)
		g.GET("/register/available", a.getRegisterAvailable)

		g.GET("/login", a.getLogin)
		g.POST("/login", a.postLogin)
		g.POST("/refresh", a.postRefresh)
		g.POST("/logout", a.authed(a.postLogout))
		g.POST("/logout/all", a.authed(a.postLogoutAll))
		g.GET("/account/whoami", a.authed(a.getWhoami))
		g.POST("/account/password", a.authed(a.postPassword))
		g.POST("/account/deactivate", a.authed(a.postDeactivate))

		g.GET("/devices", a.authed(a.getDevices))
		g.GET("/devices/:deviceID", a.authed(a.getDevice))
		g.PUT("/devices/:deviceID", a.authed(a.putDevice))
		g.DELETE("/devices/:deviceID", a.authed(a.deleteDevice))
		g.POST("/delete_devices", a.authed(a.postDeleteDevices))

		a.registerRooms(g)
		a.registerSync(g)
		a.registerPushRules(g)
		a.registerPushers(g)
		a.registerUserData(g)
		a.registerFilters(g)
		a.registerDirectory(g)
		a.registerThirdParty(g)
		a.registerEphemeral(g, a.typing)
		a.registerKeys(g)
		a.registerKeyBackup(g)

		g.GET("/profile/:userID", a.getProfile)
		g.GET("/profile/:userID/:field", a.getProfileField)
		g.PUT("/profile/:userID/:field", a.authed(a.putProfileField))
		g.DELETE("/profile/:userID/:field", a.authed(a.deleteProfileField))
	}

	a.registerRelations(r)
	a.registerAppservice(r)
	a.registerMedia(r)
	a.registerOpenID(r)
	a.registerSearch(r)
	a.registerReports(r)
	a.registerElement(r)
	admin := r.Group("/_synapse/admin/v1")
	admin.GET("/register", a.getAdminRegisterNonce)
	admin.POST("/register", a.postAdminRegister)
	admin.GET("/registration_tokens", a.admin(a.listRegistrationTokens))
	admin.POST("/registration_tokens/new", a.admin(a.newRegistrationToken))
	admin.GET("/registration_tokens/:token", a.admin(a.getRegistrationToken))
	admin.PUT("/registration_tokens/:token", a.admin(a.putRegistrationToken))
	admin.DELETE("/registration_tokens/:token", a.admin(a.deleteRegistrationToken))
}

// fail writes a Matrix error response.
func fail(c *gin.Context, e mautrix.RespError) {
	if e.StatusCode == 0 {
		e.StatusCode = http.StatusBadRequest
	}
	for k, v := range e.ExtraHeader {
		c.Header(k, v)
	}
	c.AbortWithStatusJSON(e.StatusCode, &e)
}

// internalError logs err and answers a generic 500: internal details never
// reach the client. A request the client gave up on (a long-poll aborted at
// shutdown or by a closed tab) fails its queries with context.Canceled:
// that is not the server's fault and is logged at debug level only.
func (a *API) internalError(c *gin.Context, err error) {
	log := zerolog.Ctx(c.Request.Context())
	if c.Request.Context().Err() != nil && errors.Is(err, context.Canceled) {
		log.Debug().Err(err).Str("path", c.FullPath()).Msg("Client went away while its request was handled")
	} else {
		log.Err(err).Str("path", c.FullPath()).Msg("Internal error while handling request")
	}
	fail(c, mautrix.MUnknown.WithMessage("Internal server error").WithStatus(http.StatusInternalServerError))
}

// rateLimited answers 429 with both retry_after_ms and Retry-After.
func rateLimited(c *gin.Context, retry time.Duration) {
	ms := retry.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	secs := (ms + 999) / 1000
	fail(c, mautrix.MLimitExceeded.WithMessage("Too many requests, retry in %d ms", ms).
		WithExtraField("retry_after_ms", ms).
		WithExtraHeader("Retry-After", strconv.FormatInt(secs, 10)))
}

// limit applies a limiter; it returns false after answering 429.
func limit(c *gin.Context, l *ratelimit.Limiter, key string) bool {
	if ok, retry := l.Allow(key); !ok {
		rateLimited(c, retry)
		return false
	}
	return true
}

// readJSON reads the request body into dst, enforcing the size limit and
// telling apart non-JSON (M_NOT_JSON), non-object bodies and wrong types
// (M_BAD_JSON, naming the field). It returns the raw object too, for
// handlers that need keys beyond dst's fields.
func (a *API) readJSON(c *gin.Context, dst any) (map[string]json.RawMessage, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, a.cfg.HTTP.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		fail(c, mautrix.MTooLarge.WithMessage("Request body is larger than %d bytes", a.cfg.HTTP.MaxBodyBytes))
		return nil, false
	} else if err != nil {
		fail(c, mautrix.MNotJSON.WithMessage("Could not read request body"))
		return nil, false
	}
	body = bytes.TrimSpace(body)
	if !json.Valid(body) || !utf8.Valid(body) {
		fail(c, mautrix.MNotJSON.WithMessage("Request body is not valid UTF-8 JSON"))
		return nil, false
	}
	var raw map[string]json.RawMessage
	if body[0] != '{' || json.Unmarshal(body, &raw) != nil {
		fail(c, mautrix.MBadJSON.WithMessage("Request body must be a JSON object"))
		return nil, false
	}
	// Numbers beyond a double (1e400) are valid JSON but break clients
	// (and Go) when served back: refuse them here, once, for every store.
	var probe any
	if err := json.Unmarshal(body, &probe); err != nil {
		fail(c, mautrix.MBadJSON.WithMessage("Request body has a value out of range: %v", err))
		return nil, false
	}
	if bytes.Contains(body, []byte(`\u0000`)) && containsNUL(raw) {
		// PostgreSQL text cannot hold NUL, and no Matrix identifier or
		// name needs it: refuse it at the door rather than fail deep down.
		fail(c, mautrix.MBadJSON.WithMessage("Strings must not contain NUL characters"))
		return nil, false
	}
	if dst != nil {
		if err := json.Unmarshal(body, dst); err != nil {
			fail(c, mautrix.MBadJSON.WithMessage("%s", describeJSONError(err)))
			return nil, false
		}
	}
	return raw, true
}

// containsNUL reports whether any string (key or value) in the decoded
// object holds a NUL character.
func containsNUL(raw map[string]json.RawMessage) bool {
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			return strings.ContainsRune(v, 0)
		case []any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		case map[string]any:
			for k, e := range v {
				if strings.ContainsRune(k, 0) || walk(e) {
					return true
				}
			}
		}
		return false
	}
	for k, v := range raw {
		var decoded any
		if strings.ContainsRune(k, 0) || (json.Unmarshal(v, &decoded) == nil && walk(decoded)) {
			return true
		}
	}
	return false
}

// ValidateRequestStrings refuses path parameters and query values that are
// not UTF-8 or contain NUL, before any handler passes them to the database.
func ValidateRequestStrings(c *gin.Context) {
	for _, p := range c.Params {
		if !utf8.ValidString(p.Value) || strings.ContainsRune(p.Value, 0) {
			fail(c, mautrix.MInvalidParam.WithMessage("Path parameter %s is not valid UTF-8 text", p.Key))
			return
		}
	}
	for key, values := range c.Request.URL.Query() {
		for _, v := range values {
			if !utf8.ValidString(key) || !utf8.ValidString(v) || strings.ContainsRune(v, 0) || strings.ContainsRune(key, 0) {
				fail(c, mautrix.MInvalidParam.WithMessage("Query parameters must be valid UTF-8 text"))
				return
			}
		}
	}
	c.Next()
}

func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		field := typeErr.Field
		if field == "" {
			field = "value"
		}
		return fmt.Sprintf("%s must be %s, not %s", field, jsonTypeName(typeErr.Type.Kind().String()), typeErr.Value)
	}
	return "Malformed request body: " + err.Error()
}

func jsonTypeName(kind string) string {
	switch {
	case kind == "string":
		return "a string"
	case kind == "bool":
		return "a boolean"
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "a number"
	case kind == "slice" || kind == "array":
		return "an array"
	default:
		return "an object"
	}
}

// sessionKey is where authed() leaves the session in the gin context.
const sessionKey = "switchboard.session"

// accessToken extracts the access token from the Authorization header or,
// for clients predating v1.11, the access_token query parameter.
func accessToken(c *gin.Context) (string, bool) {
	header := c.GetHeader("Authorization")
	query := c.Query("access_token")
	if header != "" {
		scheme, token, ok := strings.Cut(header, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		if query != "" && query != token {
			return "", false
		}
		return strings.TrimSpace(token), true
	}
	return query, query != ""
}

// authed wraps a handler that needs an access token.
func (a *API) authed(h func(c *gin.Context, sess *storage.Session)) gin.HandlerFunc {
	return func(c *gin.Context) {
		sess, ok := a.authenticate(c)
		if !ok {
			return
		}
		h(c, sess)
	}
}

// admin wraps a handler that needs a server admin's access token.
func (a *API) admin(h func(c *gin.Context, sess *storage.Session)) gin.HandlerFunc {
	return a.authed(func(c *gin.Context, sess *storage.Session) {
		if !sess.IsAdmin {
			fail(c, mautrix.MForbidden.WithMessage("You are not a server admin"))
			return
		}
		h(c, sess)
	})
}

func (a *API) authenticate(c *gin.Context) (*storage.Session, bool) {
	token, ok := accessToken(c)
	if !ok {
		fail(c, mautrix.MMissingToken.WithMessage("Missing access token"))
		return nil, false
	}
	if as := a.registry().ByASToken(token); as != nil {
		sess, ok := a.appserviceSession(c, as, false)
		if ok {
			c.Set(sessionKey, sess)
		}
		return sess, ok
	}
	sess, err := a.accounts.Authenticate(c.Request.Context(), token, c.ClientIP())
	switch {
	case errors.Is(err, accounts.ErrExpiredToken):
		fail(c, mautrix.MUnknownToken.WithMessage("Access token has expired").WithExtraField("soft_logout", true))
		return nil, false
	case errors.Is(err, accounts.ErrUnknownToken):
		fail(c, mautrix.MUnknownToken.WithMessage("Unknown access token").WithExtraField("soft_logout", false))
		return nil, false
	case err != nil:
		a.internalError(c, err)
		return nil, false
	}
	c.Set(sessionKey, sess)
	zerolog.Ctx(c.Request.Context()).UpdateContext(func(lc zerolog.Context) zerolog.Context {
		return lc.Stringer("user_id", sess.UserID).Str("device_id", string(sess.DeviceID))
	})
	return sess, true
}

// SessionFromContext returns the session authed() stored, if any (for
// request logging).
func SessionFromContext(c *gin.Context) *storage.Session {
	if v, ok := c.Get(sessionKey); ok {
		return v.(*storage.Session)
	}
	return nil
}
