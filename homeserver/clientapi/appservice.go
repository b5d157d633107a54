package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/appservice"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// authTypeAppservice is the login and registration type for appservices.
const authTypeAppservice = "m.login.application_service"

var errExclusive = mautrix.MExclusive

// registry returns the current appservice registrations (never nil-unsafe:
// a nil *Registry behaves as empty).
func (a *API) registry() *appservice.Registry {
	if a.appservices == nil {
		return nil
	}
	return a.appservices()
}

// appserviceSession authenticates a request made with an appservice's
// as_token: the request acts as the appservice's sender, or — with the
// user_id query parameter — as any existing user in its namespace
// (spec: "Identity assertion"). device_id selects one of that user's
// devices (MSC3202 / spec v1.17).
func (a *API) appserviceSession(c *gin.Context, as *appservice.AppService, allowMissingUser bool) (*storage.Session, bool) {
	ctx := c.Request.Context()
	sender := as.SenderUserID(a.cfg.ServerName)
	userID := sender
	if raw := c.Query("user_id"); raw != "" {
		userID = id.UserID(raw)
		if userID != sender && !as.IsInterestedInUser(userID) {
			fail(c, mautrix.MForbidden.WithMessage("Application service cannot masquerade as %s", userID))
			return nil, false
		}
	}
	sess := &storage.Session{UserID: userID, AppserviceID: as.ID()}
	user, err := a.db.GetUser(ctx, userID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		if !allowMissingUser {
			fail(c, mautrix.MForbidden.WithMessage("Application service has not registered %s", userID))
			return nil, false
		}
	case err != nil:
		a.internalError(c, err)
		return nil, false
	case user.Deactivated:
		fail(c, mautrix.MForbidden.WithMessage("%s is deactivated", userID))
		return nil, false
	}
	deviceID := c.Query("device_id")
	if deviceID == "" {
		deviceID = c.Query("org.matrix.msc3202.device_id")
	}
	if deviceID != "" {
		if _, err := a.db.GetDevice(ctx, userID, id.DeviceID(deviceID)); errors.Is(err, storage.ErrNotFound) {
			fail(c, mautrix.RespError{ErrCode: "M_UNKNOWN_DEVICE", Err: "Unknown device for this user", StatusCode: http.StatusBadRequest})
			return nil, false
		} else if err != nil {
			a.internalError(c, err)
			return nil, false
		}
		sess.DeviceID = id.DeviceID(deviceID)
	}
	return sess, true
}

// exclusiveUserOwner refuses a client other than the owning appservice
// the users of an exclusive namespace (M_EXCLUSIVE).
func (a *API) exclusiveUserOwner(c *gin.Context, userID id.UserID, asID string) bool {
	if owner := a.registry().ExclusiveOwnerOfUser(userID); owner != nil && owner.ID() != asID {
		fail(c, errExclusive.WithMessage("%s is reserved by an application service", userID))
		return false
	}
	return true
}

// registerAppserviceUser is /register with m.login.application_service:
// the appservice creates a ghost in its namespace, without a password.
func (a *API) registerAppserviceUser(c *gin.Context, as *appservice.AppService, req *registerRequest) {
	ctx := c.Request.Context()
	if req.Username == "" {
		fail(c, errMissingParam.WithMessage("username is required"))
		return
	}
	userID, err := a.accounts.UserIDFor(req.Username)
	if err != nil {
		fail(c, mautrix.MInvalidUsername.WithMessage("%s", err.Error()))
		return
	}
	if !as.IsInterestedInUser(userID) && userID != as.SenderUserID(a.cfg.ServerName) {
		fail(c, errExclusive.WithMessage("%s is outside the application service's namespace", userID))
		return
	}
	if !a.exclusiveUserOwner(c, userID, as.ID()) {
		return
	}
	var tokens *accounts.Tokens
	err = a.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := a.accounts.CreateUser(ctx, accounts.NewUser{UserID: userID, AppserviceID: as.ID()}); err != nil {
			return err
		}
		if req.InhibitLogin {
			return nil
		}
		tokens, err = a.accounts.StartSession(ctx, userID, accounts.LoginOptions{
			DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName, Refreshable: req.RefreshToken, IP: c.ClientIP()})
		return err
	})
	if errors.Is(err, accounts.ErrUserInUse) {
		fail(c, mautrix.MUserInUse.WithMessage("User ID already taken"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	if tokens == nil {
		c.JSON(http.StatusOK, gin.H{"user_id": userID, "home_server": a.cfg.ServerName})
		return
	}
	c.JSON(http.StatusOK, a.loginResponse(tokens))
}

// loginAppserviceUser is /login with m.login.application_service.
func (a *API) loginAppserviceUser(c *gin.Context, req *loginRequest) {
	token, ok := accessToken(c)
	as := a.registry().ByASToken(token)
	if !ok || as == nil {
		fail(c, mautrix.MForbidden.WithMessage("m.login.application_service needs an application service token"))
		return
	}
	user := identifierUser(req.Identifier, req.User)
	userID, err := a.accounts.ResolveLogin(user)
	if err != nil || (!as.IsInterestedInUser(userID) && userID != as.SenderUserID(a.cfg.ServerName)) {
		fail(c, mautrix.MForbidden.WithMessage("User is outside the application service's namespace"))
		return
	}
	ctx := c.Request.Context()
	if u, err := a.db.GetUser(ctx, userID); errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated) {
		fail(c, mautrix.MForbidden.WithMessage("No such user"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	tokens, err := a.accounts.StartSession(ctx, userID, accounts.LoginOptions{
		DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName, Refreshable: req.RefreshToken, IP: c.ClientIP()})
	if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, a.loginResponse(tokens))
}

// massagedTS returns the ts query parameter an appservice may set on sends
// (spec: "Timestamp massaging"); 0 for everyone else.
func massagedTS(c *gin.Context, sess *storage.Session) int64 {
	if sess.AppserviceID == "" {
		return 0
	}
	ts, err := strconv.ParseInt(c.Query("ts"), 10, 64)
	if err != nil || ts <= 0 {
		return 0
	}
	return ts
}

// pingTimeout bounds POST /appservice/{id}/ping.
const pingTimeout = 10 * time.Second

func (a *API) registerAppservice(r gin.IRouter) {
	r.POST("/_matrix/client/v1/appservice/:appserviceID/ping", a.authed(a.postAppservicePing))
	for _, prefix := range clientPrefixes {
		r.PUT(prefix+"/directory/list/appservice/:networkID/:roomID", a.authed(a.putAppserviceRoomDirectory))
	}
}

// postAppservicePing asks the homeserver to ping the appservice, proving
// both directions work (spec: POST /_matrix/client/v1/appservice/{id}/ping).
func (a *API) postAppservicePing(c *gin.Context, sess *storage.Session) {
	as := a.registry().ByID(c.Param("appserviceID"))
	if as == nil || sess.AppserviceID != as.ID() {
		fail(c, mautrix.MForbidden.WithMessage("This token does not belong to that application service"))
		return
	}
	var req struct {
		TransactionID string `json:"transaction_id,omitempty"`
	}
	if _, ok := a.readOptionalJSON(c, &req); !ok {
		return
	}
	url := strings.TrimRight(as.Registration.URL, "/")
	if url == "" {
		fail(c, mautrix.MURLNotSet.WithMessage("The application service has no URL").WithStatus(http.StatusBadRequest))
		return
	}
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(c.Request.Context(), pingTimeout)
	defer cancel()
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/_matrix/app/v1/ping", bytes.NewReader(body))
	if err != nil {
		fail(c, mautrix.MConnectionFailed.WithMessage("Bad appservice URL").WithStatus(http.StatusBadGateway))
		return
	}
	httpReq.Header.Set("Content-Type", "application/json")
	httpReq.Header.Set("Authorization", "Bearer "+as.Registration.ServerToken)
	start := time.Now()
	resp, err := http.DefaultClient.Do(httpReq)
	duration := time.Since(start)
	var netErr net.Error
	switch {
	case err != nil && (errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout())):
		fail(c, mautrix.MConnectionTimeout.WithMessage("The application service did not answer in time").WithStatus(http.StatusGatewayTimeout))
		return
	case err != nil:
		fail(c, mautrix.MConnectionFailed.WithMessage("Could not reach the application service").WithStatus(http.StatusBadGateway))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		respBody, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fail(c, mautrix.MBadStatus.WithMessage("The application service answered HTTP %d", resp.StatusCode).
			WithStatus(http.StatusBadGateway).WithExtraData(map[string]any{"status": resp.StatusCode, "body": string(respBody)}))
		return
	}
	c.JSON(http.StatusOK, gin.H{"duration_ms": duration.Milliseconds()})
}

// queryTimeout bounds how long a client waits on an appservice query.
const queryTimeout = 10 * time.Second

// queryAppservice asks the appservices interested in an entity whether it
// exists (spec: "Querying" — GET /_matrix/app/v1/users/{userId} and
// /rooms/{roomAlias}); an appservice answering 200 has just created it.
// It reports whether one did.
func (a *API) queryAppservice(ctx context.Context, kind, entity string, interested func(*appservice.AppService) bool) bool {
	for _, as := range a.registry().All() {
		if interested(as) && a.asGet(ctx, as, kind+"/"+url.PathEscape(entity), nil, nil) {
			return true
		}
	}
	return false
}

// ensureUser returns whether a local user exists, asking the appservices
// about unknown users in their namespaces first.
func (a *API) ensureUser(ctx context.Context, userID id.UserID) (bool, error) {
	_, err := a.db.GetUser(ctx, userID)
	if err == nil {
		return true, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return false, err
	}
	if !a.queryAppservice(ctx, "users", string(userID), func(as *appservice.AppService) bool { return as.IsInterestedInUser(userID) }) {
		return false, nil
	}
	if _, err := a.db.GetUser(ctx, userID); err != nil {
		return false, nil
	}
	return true, nil
}

// ensureAlias resolves a local alias, asking the appservices about unknown
// aliases in their namespaces first (how bridges create portal rooms on
// demand, e.g. #irc_libera_#matrix:server).
func (a *API) ensureAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	roomID, _, err := a.db.ResolveAlias(ctx, alias)
	if !errors.Is(err, storage.ErrNotFound) {
		return roomID, err
	}
	if !a.queryAppservice(ctx, "rooms", string(alias), func(as *appservice.AppService) bool { return as.IsInterestedInAlias(alias) }) {
		return "", storage.ErrNotFound
	}
	roomID, _, err = a.db.ResolveAlias(ctx, alias)
	return roomID, err
}

// putAppserviceRoomDirectory publishes a room in one of the appservice's
// networks' directories (spec: PUT /directory/list/appservice/{networkId}/{roomId}).
func (a *API) putAppserviceRoomDirectory(c *gin.Context, sess *storage.Session) {
	if sess.AppserviceID == "" {
		fail(c, mautrix.MForbidden.WithMessage("Only application services may publish to network directories"))
		return
	}
	var req struct {
		Visibility string `json:"visibility"`
	}
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	if req.Visibility != "public" && req.Visibility != "private" {
		fail(c, mautrix.MInvalidParam.WithMessage("visibility must be public or private"))
		return
	}
	roomID := id.RoomID(c.Param("roomID"))
	ctx := c.Request.Context()
	if _, err := a.rooms.Version(ctx, roomID); err != nil {
		a.roomError(c, err)
		return
	}
	networkID := c.Param("networkID")
	if networkID == "" || len(networkID) > 255 {
		fail(c, mautrix.MInvalidParam.WithMessage("Invalid network ID"))
		return
	}
	if err := a.db.SetAppserviceRoomDirectory(ctx, roomID, sess.AppserviceID, networkID, req.Visibility == "public"); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}
