package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// The provisioning API, served on the appservice's HTTP listener under
// /_switchboard/provision/v1/, is what an integration manager calls to
// bridge rooms for its users:
//
//	GET  /status           the bridge's state, the user's permission and logins
//	GET  /portals          bridged rooms the user is in (all of them for admins)
//	POST /link   {"room_id": "!r:hs", "channel": "…"}
//	POST /unlink {"room_id": "!r:hs"}
//
// A caller authenticates with "Authorization: Bearer <token>", either
//   - the shared secret (provisioning.shared_secret), acting for the user
//     named by ?user_id=, or
//   - an OpenID token of the user (POST /_matrix/client/v3/user/{userId}/openid/request_token),
//     which the bridge checks with the user's homeserver; ?user_id= then
//     names the server to ask (the bridge's own homeserver if absent).
//
// Errors are the spec's {"errcode", "error"} JSON. Linking and unlinking
// need the permission "user" and power level 50 in the room, as the link
// and unlink commands do.
const provisioningPrefix = "/_switchboard/provision/v1"

// ErrcodeAlreadyBridged is the errcode of a link that conflicts with an
// existing one (HTTP 409).
const ErrcodeAlreadyBridged = "IM.SWITCHBOARD.ALREADY_BRIDGED"

type provisioning struct {
	b      *Bridge
	client *http.Client

	mu     sync.Mutex
	openID map[[32]byte]openIDEntry // token hash → user, for a minute
}

type openIDEntry struct {
	user    id.UserID
	expires time.Time
}

func (b *Bridge) provisioningHandler() http.Handler {
	p := &provisioning{b: b, client: &http.Client{Timeout: 10 * time.Second}, openID: map[[32]byte]openIDEntry{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+provisioningPrefix+"/status", p.authed(p.status))
	mux.HandleFunc("GET "+provisioningPrefix+"/portals", p.authed(p.portals))
	mux.HandleFunc("POST "+provisioningPrefix+"/link", p.authed(p.link))
	mux.HandleFunc("POST "+provisioningPrefix+"/unlink", p.authed(p.unlink))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mautrix.MUnrecognized.WithMessage("Unknown provisioning endpoint").WithStatus(http.StatusNotFound).Write(w)
	})
	return mux
}

type provisioningHandler func(w http.ResponseWriter, r *http.Request, u *User)

// authed authenticates the caller (see the API's description) and hands
// on the user they act for.
func (p *provisioning) authed(next provisioningHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secret := p.b.Config.Provisioning.SharedSecret
		if secret == "disable" {
			mautrix.MNotFound.WithMessage("Provisioning is disabled").WithStatus(http.StatusNotFound).Write(w)
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			mautrix.MMissingToken.WithMessage("Missing Authorization: Bearer token").WithStatus(http.StatusUnauthorized).Write(w)
			return
		}
		queryUser := id.UserID(r.URL.Query().Get("user_id"))
		var userID id.UserID
		if secret != "" && subtle.ConstantTimeCompare([]byte(token), []byte(secret)) == 1 {
			if _, _, err := queryUser.Parse(); err != nil {
				mautrix.MInvalidParam.WithMessage("user_id must name the user to act for").WithStatus(http.StatusBadRequest).Write(w)
				return
			}
			userID = queryUser
		} else {
			var err error
			if userID, err = p.checkOpenID(r.Context(), token, queryUser); err != nil {
				p.b.Log.Debug().Err(err).Msg("Provisioning token refused")
				mautrix.MUnknownToken.WithMessage("Unknown token").WithStatus(http.StatusUnauthorized).Write(w)
				return
			}
		}
		u, err := p.b.User(r.Context(), userID)
		if err != nil {
			p.internalError(w, err)
			return
		}
		if u.Permission < PermissionUser {
			mautrix.MForbidden.WithMessage("You are not allowed to use this bridge").WithStatus(http.StatusForbidden).Write(w)
			return
		}
		next(w, r, u)
	}
}

// checkOpenID asks the user's homeserver whom an OpenID token belongs to
// (server-server API: GET /_matrix/federation/v1/openid/userinfo).
func (p *provisioning) checkOpenID(ctx context.Context, token string, claimed id.UserID) (id.UserID, error) {
	key := sha256.Sum256([]byte(token))
	p.mu.Lock()
	if e, ok := p.openID[key]; ok && time.Now().Before(e.expires) && (claimed == "" || claimed == e.user) {
		p.mu.Unlock()
		return e.user, nil
	}
	p.mu.Unlock()
	server := p.b.AS.Config.ServerName
	if claimed != "" {
		server = claimed.Homeserver()
	}
	base := p.b.AS.Config.HomeserverURL
	if server != p.b.AS.Config.ServerName {
		resolved, err := federation.ResolveServerName(ctx, server)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", server, err)
		}
		base = "https://" + resolved.HostHeader
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		strings.TrimRight(base, "/")+"/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(token), nil)
	if err != nil {
		return "", err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("userinfo: HTTP %d", resp.StatusCode)
	}
	var info struct {
		Sub id.UserID `json:"sub"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 64<<10)).Decode(&info); err != nil {
		return "", fmt.Errorf("userinfo: %w", err)
	}
	if info.Sub.Homeserver() != server || (claimed != "" && info.Sub != claimed) {
		return "", fmt.Errorf("userinfo: %s answered for %q", server, info.Sub)
	}
	p.mu.Lock()
	now := time.Now()
	for k, e := range p.openID {
		if now.After(e.expires) {
			delete(p.openID, k)
		}
	}
	p.openID[key] = openIDEntry{user: info.Sub, expires: now.Add(time.Minute)}
	p.mu.Unlock()
	return info.Sub, nil
}

func (p *provisioning) internalError(w http.ResponseWriter, err error) {
	p.b.Log.Error().Err(err).Msg("Provisioning request failed")
	mautrix.MUnknown.WithMessage("Internal error").WithStatus(http.StatusInternalServerError).Write(w)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// LoginInfo and PortalInfo are the provisioning API's JSON.
type LoginInfo struct {
	ID         string `json:"id"`
	RemoteName string `json:"remote_name,omitempty"`
}

type PortalInfo struct {
	PortalID string    `json:"portal_id"`
	RoomID   id.RoomID `json:"room_id"`
	Name     string    `json:"name,omitempty"`
	Linked   bool      `json:"linked"`
	Relay    bool      `json:"relay"`
}

func portalInfo(pt *Portal) PortalInfo {
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	return PortalInfo{PortalID: pt.ID, RoomID: pt.roomID, Name: pt.name, Linked: pt.linked, Relay: pt.relay}
}

func (p *provisioning) status(w http.ResponseWriter, r *http.Request, u *User) {
	info := p.b.Network.Info()
	logins := []LoginInfo{}
	for _, l := range u.Logins() {
		logins = append(logins, LoginInfo{ID: l.ID, RemoteName: l.RemoteName})
	}
	writeJSON(w, map[string]any{
		"network": map[string]any{"id": info.ID, "displayname": info.DisplayName, "requires_login": info.RequiresLogin},
		"bot":     p.b.AS.Config.BotID(),
		"state":   p.b.State(),
		"user":    map[string]any{"user_id": u.ID, "permission": u.Permission, "logins": logins},
	})
}

func (p *provisioning) portals(w http.ResponseWriter, r *http.Request, u *User) {
	all, err := p.b.Portals(r.Context())
	if err != nil {
		p.internalError(w, err)
		return
	}
	out := []PortalInfo{}
	for _, pt := range all {
		if u.Permission >= PermissionAdmin || p.b.AS.StateStore.IsInRoom(r.Context(), pt.RoomID(), u.ID) {
			out = append(out, portalInfo(pt))
		}
	}
	writeJSON(w, map[string]any{"portals": out})
}

// readBody decodes a JSON request body of at most 64 KiB.
func readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(v); err != nil {
		mautrix.MNotJSON.WithMessage("Request body must be a JSON object: " + err.Error()).WithStatus(http.StatusBadRequest).Write(w)
		return false
	}
	return true
}

// checkPower answers 403 unless u has linkPower in the room.
func (p *provisioning) checkPower(w http.ResponseWriter, r *http.Request, u *User, room id.RoomID) bool {
	level, err := p.b.Bot.PowerLevel(r.Context(), room, u.ID)
	if err != nil {
		mautrix.MForbidden.WithMessage("The bridge bot cannot see the room's power levels: invite it first").
			WithStatus(http.StatusForbidden).Write(w)
		return false
	}
	if level < linkPower {
		mautrix.MForbidden.WithMessage(fmt.Sprintf("You need power level %d in the room; you have %d", linkPower, level)).
			WithStatus(http.StatusForbidden).Write(w)
		return false
	}
	return true
}

func (p *provisioning) link(w http.ResponseWriter, r *http.Request, u *User) {
	var req struct {
		RoomID  id.RoomID `json:"room_id"`
		Channel string    `json:"channel"`
	}
	if !readBody(w, r, &req) {
		return
	}
	if !strings.HasPrefix(string(req.RoomID), "!") || req.Channel == "" {
		mautrix.MBadJSON.WithMessage("room_id and channel are required").WithStatus(http.StatusBadRequest).Write(w)
		return
	}
	ctx := r.Context()
	// The bot joins first (it must be invited), so it can read the power levels.
	if err := p.b.AS.Bot().EnsureJoined(ctx, req.RoomID); err != nil {
		mautrix.MForbidden.WithMessage(fmt.Sprintf("The bridge bot %s cannot join the room: invite it first", p.b.AS.Config.BotID())).
			WithStatus(http.StatusForbidden).Write(w)
		return
	}
	if !p.checkPower(w, r, u, req.RoomID) {
		return
	}
	pt, warning, err := p.b.Link(ctx, req.RoomID, req.Channel, u.ID)
	switch {
	case errors.Is(err, ErrUnknownChannel):
		mautrix.MNotFound.WithMessage("No such channel: " + req.Channel).WithStatus(http.StatusNotFound).Write(w)
		return
	case errors.Is(err, ErrAlreadyLinked):
		mautrix.RespError{ErrCode: ErrcodeAlreadyBridged, Err: err.Error(), StatusCode: http.StatusConflict}.Write(w)
		return
	case err != nil:
		p.internalError(w, err)
		return
	}
	resp := map[string]any{"portal": portalInfo(pt)}
	if warning != "" {
		resp["warning"] = warning
	}
	writeJSON(w, resp)
}

func (p *provisioning) unlink(w http.ResponseWriter, r *http.Request, u *User) {
	var req struct {
		RoomID id.RoomID `json:"room_id"`
	}
	if !readBody(w, r, &req) {
		return
	}
	pt, err := p.b.PortalByRoom(r.Context(), req.RoomID)
	if err != nil {
		p.internalError(w, err)
		return
	}
	if pt == nil {
		mautrix.MNotFound.WithMessage("The room is not bridged").WithStatus(http.StatusNotFound).Write(w)
		return
	}
	if !p.checkPower(w, r, u, req.RoomID) {
		return
	}
	if err := p.b.Unlink(r.Context(), pt); err != nil {
		p.internalError(w, err)
		return
	}
	writeJSON(w, map[string]any{})
}
