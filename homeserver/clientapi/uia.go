package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/gin-gonic/gin"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// UIASessionLifetime is how long a user-interactive auth session lives.
const UIASessionLifetime = 15 * time.Minute

// Auth types this server implements.
const (
	authDummy             = "m.login.dummy"
	authPassword          = "m.login.password"
	authRegistrationToken = "m.login.registration_token"
)

// uiaAuth is the "auth" object of a UIA request.
type uiaAuth struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Password   string          `json:"password"`
	Token      string          `json:"token"`
	Identifier *userIdentifier `json:"identifier"`
	User       string          `json:"user"` // deprecated form of identifier
}

type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

// uiaRequest describes one UIA-protected call.
type uiaRequest struct {
	flows [][]string
	// user is the authenticated user (empty for /register); password
	// stages must prove they are this user.
	user id.UserID
	auth *uiaAuth
}

type uiaResponse struct {
	Flows     []uiaFlow      `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session"`
	Completed []string       `json:"completed,omitempty"`
	ErrCode   string         `json:"errcode,omitempty"`
	Error     string         `json:"error,omitempty"`
}

type uiaFlow struct {
	Stages []string `json:"stages"`
}

// runUIA drives user-interactive auth for the current request. It returns
// the session once some flow is complete; otherwise it has answered (401
// with the flows, or an error) and returns nil.
func (a *API) runUIA(c *gin.Context, req uiaRequest) *storage.UIASession {
	ctx := c.Request.Context()
	endpoint := c.Request.Method + " " + c.Request.URL.Path
	var sess *storage.UIASession
	if req.auth != nil && req.auth.Session != "" {
		var err error
		sess, err = a.db.GetUIASession(ctx, req.auth.Session)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && time.Since(time.UnixMilli(sess.CreatedTS)) > UIASessionLifetime) {
			fail(c, mautrix.MUnknown.WithMessage("Unknown or expired auth session").WithStatus(http.StatusBadRequest))
			return nil
		} else if err != nil {
			a.internalError(c, err)
			return nil
		}
		// A session proves nothing for a different endpoint or user.
		if sess.Endpoint != endpoint || sess.UserID != req.user {
			fail(c, mautrix.MForbidden.WithMessage("Auth session was started for a different request"))
			return nil
		}
	} else {
		sess = &storage.UIASession{SessionID: random.String(24), Endpoint: endpoint, UserID: req.user}
		if err := a.db.CreateUIASession(ctx, sess); err != nil {
			a.internalError(c, err)
			return nil
		}
	}

	if req.auth != nil && req.auth.Type != "" {
		if !flowsOffer(req.flows, sess.Completed, req.auth.Type) {
			a.uiaChallenge(c, req, sess, mautrix.RespError{ErrCode: "M_UNRECOGNIZED", Err: "Auth type " + req.auth.Type + " is not offered here"}.WithStatus(http.StatusBadRequest))
			return nil
		}
		if !slices.Contains(sess.Completed, req.auth.Type) {
			if stageErr, ok := a.uiaStage(c, req, sess); !ok {
				return nil
			} else if stageErr != nil {
				a.uiaChallenge(c, req, sess, *stageErr)
				return nil
			}
			sess.Completed = append(sess.Completed, req.auth.Type)
			if err := a.db.UpdateUIASession(ctx, sess); err != nil {
				a.internalError(c, err)
				return nil
			}
		}
	}
	for _, flow := range req.flows {
		if containsAll(sess.Completed, flow) {
			return sess
		}
	}
	a.uiaChallenge(c, req, sess, mautrix.RespError{})
	return nil
}

// uiaStage checks one auth stage. ok=false means it already answered (an
// internal error or rate limit); a non-nil RespError is a failed attempt
// the client may retry.
func (a *API) uiaStage(c *gin.Context, req uiaRequest, sess *storage.UIASession) (*mautrix.RespError, bool) {
	ctx := c.Request.Context()
	switch req.auth.Type {
	case authDummy:
		return nil, true
	case authRegistrationToken:
		if req.auth.Token == "" || len(req.auth.Token) > 64 {
			e := errMissingParam.WithMessage("token is required")
			return &e, true
		}
		ok, err := a.db.ReserveRegistrationToken(ctx, req.auth.Token, time.Now().UnixMilli())
		if err != nil {
			a.internalError(c, err)
			return nil, false
		} else if !ok {
			e := mautrix.MForbidden.WithMessage("Invalid registration token")
			return &e, true
		}
		sess.RegistrationToken = req.auth.Token
		return nil, true
	case authPassword:
		userID, err := a.accounts.ResolveLogin(identifierUser(req.auth.Identifier, req.auth.User))
		if err != nil || userID != req.user {
			e := mautrix.MForbidden.WithMessage("Invalid username or password")
			return &e, true
		}
		if !a.checkFailedLoginBudget(c, userID) {
			return nil, false
		}
		if _, err := a.accounts.CheckPassword(ctx, userID, req.auth.Password); err != nil {
			if !errors.Is(err, accounts.ErrInvalidCredentials) && !errors.Is(err, accounts.ErrDeactivated) {
				a.internalError(c, err)
				return nil, false
			}
			a.failedLoginLimit.Allow(string(userID))
			e := mautrix.MForbidden.WithMessage("Invalid username or password")
			return &e, true
		}
		return nil, true
	}
	e := mautrix.MUnrecognized.WithMessage("Unsupported auth type").WithStatus(http.StatusBadRequest)
	return &e, true
}

func (a *API) uiaChallenge(c *gin.Context, req uiaRequest, sess *storage.UIASession, stageErr mautrix.RespError) {
	resp := uiaResponse{Params: map[string]any{}, Session: sess.SessionID, Completed: sess.Completed,
		ErrCode: stageErr.ErrCode, Error: stageErr.Err}
	for _, f := range req.flows {
		resp.Flows = append(resp.Flows, uiaFlow{Stages: f})
	}
	status := http.StatusUnauthorized
	if stageErr.StatusCode != 0 && stageErr.StatusCode != http.StatusForbidden {
		status = stageErr.StatusCode
	}
	c.AbortWithStatusJSON(status, resp)
}

// flowsOffer reports whether authType is the next stage of some flow that
// is consistent with the stages completed so far.
func flowsOffer(flows [][]string, completed []string, authType string) bool {
	for _, flow := range flows {
		if len(completed) <= len(flow) && slices.Equal(flow[:len(completed)], completed) && slices.Contains(flow, authType) {
			return true
		}
		if slices.Contains(completed, authType) && slices.Contains(flow, authType) {
			return true
		}
	}
	return false
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func identifierUser(ident *userIdentifier, legacy string) string {
	if ident != nil && ident.Type == "m.id.user" {
		return ident.User
	}
	if ident == nil {
		return legacy
	}
	return ""
}

// passwordFlows is the UIA every authenticated sensitive action uses.
var passwordFlows = [][]string{{authPassword}}

// readJSONWithAuth is readJSON for a request that may carry UIA auth: it
// returns the parsed auth object (nil when there is none).
func (a *API) readJSONWithAuth(c *gin.Context, dst any) (*uiaAuth, bool) {
	raw, ok := a.readJSON(c, dst)
	if !ok {
		return nil, false
	}
	return parseAuth(c, raw)
}

// parseAuth pulls the optional "auth" object out of a request; when it is
// not an object it answers M_BAD_JSON and returns false.
func parseAuth(c *gin.Context, raw map[string]json.RawMessage) (*uiaAuth, bool) {
	data, ok := raw["auth"]
	if !ok || string(data) == "null" {
		return nil, true
	}
	var auth uiaAuth
	if err := json.Unmarshal(data, &auth); err != nil {
		fail(c, mautrix.MBadJSON.WithMessage("auth must be an object"))
		return nil, false
	}
	return &auth, true
}
