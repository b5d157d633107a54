package bridge

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
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
// Callers authenticate as framework.ProvisioningAuth describes: the shared
// secret (provisioning.shared_secret) with ?user_id=, or the user's own
// OpenID token.
//
// Errors are the spec's {"errcode", "error"} JSON. Linking and unlinking
// need the permission "user" and power level 50 in the room, as the link
// and unlink commands do.
const provisioningPrefix = "/_switchboard/provision/v1"

// ErrcodeAlreadyBridged is the errcode of a link that conflicts with an
// existing one (HTTP 409).
const ErrcodeAlreadyBridged = "IM.SWITCHBOARD.ALREADY_BRIDGED"

type provisioning struct {
	b    *Bridge
	auth *framework.ProvisioningAuth
}

func (b *Bridge) provisioningHandler() http.Handler {
	p := &provisioning{b: b, auth: framework.NewProvisioningAuth(b.Config.Provisioning.SharedSecret, &b.Config.Config)}
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

// authed authenticates the caller (framework.ProvisioningAuth) and hands
// on the user they act for, who must be allowed to use the bridge.
func (p *provisioning) authed(next provisioningHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		userID, ok := p.auth.Authenticate(w, r)
		if !ok {
			return
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

func (p *provisioning) internalError(w http.ResponseWriter, err error) {
	p.b.Log.Error().Err(err).Msg("Provisioning request failed")
	mautrix.MUnknown.WithMessage("Internal error").WithStatus(http.StatusInternalServerError).Write(w)
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
	framework.WriteJSON(w, map[string]any{
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
	framework.WriteJSON(w, map[string]any{"portals": out})
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
	if !framework.ReadJSON(w, r, &req) {
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
	if err := p.b.mayLink(ctx, u, req.Channel); err != nil {
		mautrix.MForbidden.WithMessage(err.Error()).WithStatus(http.StatusForbidden).Write(w)
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
	framework.WriteJSON(w, resp)
}

func (p *provisioning) unlink(w http.ResponseWriter, r *http.Request, u *User) {
	var req struct {
		RoomID id.RoomID `json:"room_id"`
	}
	if !framework.ReadJSON(w, r, &req) {
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
	framework.WriteJSON(w, map[string]any{})
}
