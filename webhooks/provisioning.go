package webhooks

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
)

// The provisioning API, on the hook listener under
// /_switchboard/webhooks/v1/, is what an integration manager calls to
// manage a room's hooks for a user (authenticated as
// framework.ProvisioningAuth describes; the user needs min_power in the
// room, as for the commands):
//
//	GET    /rooms/{roomId}/hooks                 {"hooks": [{name, created_by, created_at, expires_at, signed, template}]}
//	POST   /rooms/{roomId}/hooks                 {"name": "alerts", "expires_in_seconds": 0} → {"hook": {…}, "url": "…"}
//	DELETE /rooms/{roomId}/hooks/{name}          {}
//	POST   /rooms/{roomId}/hooks/{name}/rotate   {"url": "…"}
//
// The bot joins the room when a hook is created (invite it first).
const provisioningPrefix = "/_switchboard/webhooks/v1"

func (s *Service) registerProvisioning(mux *http.ServeMux) {
	mux.HandleFunc("GET "+provisioningPrefix+"/rooms/{roomID}/hooks", s.provisioned(s.provList))
	mux.HandleFunc("POST "+provisioningPrefix+"/rooms/{roomID}/hooks", s.provisioned(s.provCreate))
	mux.HandleFunc("DELETE "+provisioningPrefix+"/rooms/{roomID}/hooks/{name}", s.provisioned(s.provDelete))
	mux.HandleFunc("POST "+provisioningPrefix+"/rooms/{roomID}/hooks/{name}/rotate", s.provisioned(s.provRotate))
}

// hookJSON is a hook as the provisioning API shows it (never its secret).
type hookJSON struct {
	Name      string    `json:"name"`
	CreatedBy id.UserID `json:"created_by"`
	CreatedAt int64     `json:"created_at"`
	ExpiresAt int64     `json:"expires_at,omitempty"`
	Signed    bool      `json:"signed"`
	Template  string    `json:"template,omitempty"`
}

func toJSON(h *Hook) hookJSON {
	j := hookJSON{Name: h.Name, CreatedBy: h.CreatedBy, CreatedAt: h.CreatedAt.UnixMilli(), Signed: h.SigningSecret != "", Template: h.Template}
	if !h.ExpiresAt.IsZero() {
		j.ExpiresAt = h.ExpiresAt.UnixMilli()
	}
	return j
}

type provHandler func(w http.ResponseWriter, r *http.Request, user id.UserID, room id.RoomID)

// provisioned authenticates the caller and checks their power in the room.
func (s *Service) provisioned(next provHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user, ok := s.auth.Authenticate(w, r)
		if !ok {
			return
		}
		room := id.RoomID(r.PathValue("roomID"))
		if len(room) < 2 || room[0] != '!' {
			mautrix.MInvalidParam.WithMessage("Not a room ID").WithStatus(http.StatusBadRequest).Write(w)
			return
		}
		if err := s.AS.Bot().EnsureJoined(r.Context(), room); err != nil {
			mautrix.MForbidden.WithMessage(fmt.Sprintf("The webhook bot %s cannot join the room: invite it first", s.Config.BotID())).
				WithStatus(http.StatusForbidden).Write(w)
			return
		}
		level, err := s.Bot.PowerLevel(r.Context(), room, user)
		if err != nil {
			s.provError(w, err)
			return
		}
		if level < s.Config.MinPower {
			mautrix.MForbidden.WithMessage(fmt.Sprintf("You need power level %d in the room; you have %d", s.Config.MinPower, level)).
				WithStatus(http.StatusForbidden).Write(w)
			return
		}
		next(w, r, user, room)
	}
}

func (s *Service) provError(w http.ResponseWriter, err error) {
	s.Log.Err(err).Msg("Provisioning request failed")
	mautrix.MUnknown.WithMessage("Internal error").WithStatus(http.StatusInternalServerError).Write(w)
}

func (s *Service) provList(w http.ResponseWriter, r *http.Request, _ id.UserID, room id.RoomID) {
	hooks, err := s.Hooks(r.Context(), room)
	if err != nil {
		s.provError(w, err)
		return
	}
	out := []hookJSON{}
	for _, h := range hooks {
		out = append(out, toJSON(h))
	}
	framework.WriteJSON(w, map[string]any{"hooks": out})
}

func (s *Service) provCreate(w http.ResponseWriter, r *http.Request, user id.UserID, room id.RoomID) {
	var req struct {
		Name             string `json:"name"`
		ExpiresInSeconds int64  `json:"expires_in_seconds"`
	}
	if !framework.ReadJSON(w, r, &req) {
		return
	}
	if err := validHookName(req.Name); err != nil || req.ExpiresInSeconds < 0 {
		mautrix.MInvalidParam.WithMessage("name: 1–64 characters without spaces; expires_in_seconds ≥ 0").WithStatus(http.StatusBadRequest).Write(w)
		return
	}
	if _, err := s.HookByName(r.Context(), room, req.Name); err == nil {
		mautrix.RespError{ErrCode: "IM.SWITCHBOARD.HOOK_EXISTS", Err: "The room already has a hook with that name", StatusCode: http.StatusConflict}.Write(w)
		return
	}
	h, token, err := s.CreateHook(r.Context(), room, req.Name, user, time.Duration(req.ExpiresInSeconds)*time.Second)
	if err != nil {
		s.provError(w, err)
		return
	}
	framework.WriteJSON(w, map[string]any{"hook": toJSON(h), "url": s.HookURL(token)})
}

// namedHook is the hook the path names, or an answered 404.
func (s *Service) namedHook(w http.ResponseWriter, r *http.Request, room id.RoomID) *Hook {
	h, err := s.HookByName(r.Context(), room, r.PathValue("name"))
	if errors.Is(err, ErrNoHook) {
		mautrix.MNotFound.WithMessage("No such hook").WithStatus(http.StatusNotFound).Write(w)
		return nil
	} else if err != nil {
		s.provError(w, err)
		return nil
	}
	return h
}

func (s *Service) provDelete(w http.ResponseWriter, r *http.Request, _ id.UserID, room id.RoomID) {
	if h := s.namedHook(w, r, room); h != nil {
		if err := s.RevokeHook(r.Context(), h); err != nil {
			s.provError(w, err)
			return
		}
		framework.WriteJSON(w, map[string]any{})
	}
}

func (s *Service) provRotate(w http.ResponseWriter, r *http.Request, _ id.UserID, room id.RoomID) {
	if h := s.namedHook(w, r, room); h != nil {
		token, err := s.RotateHook(r.Context(), h)
		if err != nil {
			s.provError(w, err)
			return
		}
		framework.WriteJSON(w, map[string]any{"url": s.HookURL(token)})
	}
}
