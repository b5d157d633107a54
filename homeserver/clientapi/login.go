package clientapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

func zerologFromGin(c *gin.Context) *zerolog.Logger { return zerolog.Ctx(c.Request.Context()) }

func (a *API) getLogin(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"flows": []gin.H{{"type": authPassword}, {"type": authTypeAppservice}}})
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"`
	Medium                   string          `json:"medium"`
	Password                 string          `json:"password"`
	DeviceID                 id.DeviceID     `json:"device_id"`
	InitialDeviceDisplayName *string         `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

func (a *API) postLogin(c *gin.Context) {
	if !limit(c, a.loginLimit, c.ClientIP()) {
		return
	}
	var req loginRequest
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	if req.Type == authTypeAppservice {
		a.loginAppserviceUser(c, &req)
		return
	}
	if req.Type != authPassword {
		fail(c, mautrix.MUnknown.WithMessage("Unknown login type %q", req.Type).WithStatus(http.StatusBadRequest))
		return
	}
	if req.Identifier != nil && req.Identifier.Type == "" {
		fail(c, errMissingParam.WithMessage("identifier.type is required"))
		return
	}
	if req.Identifier != nil && req.Identifier.Type != "m.id.user" {
		// We hold no third-party IDs, so none can match (spec: 403).
		fail(c, mautrix.MForbidden.WithMessage("Unknown identifier"))
		return
	}
	if req.Medium != "" {
		fail(c, mautrix.MForbidden.WithMessage("Unknown identifier"))
		return
	}
	user := identifierUser(req.Identifier, req.User)
	if user == "" {
		fail(c, errMissingParam.WithMessage("identifier.user is required"))
		return
	}
	if len(req.DeviceID) > 255 {
		fail(c, mautrix.MInvalidParam.WithMessage("device_id is too long"))
		return
	}
	userID, err := a.accounts.ResolveLogin(user)
	if err != nil {
		// Hash anyway so the answer takes as long as for a real account.
		a.accounts.Hasher.Verify("", req.Password)
		fail(c, mautrix.MForbidden.WithMessage("Invalid username or password"))
		return
	}
	if !a.checkFailedLoginBudget(c, userID) {
		return
	}
	ctx := c.Request.Context()
	if _, err := a.accounts.CheckPassword(ctx, userID, req.Password); err != nil {
		switch {
		case errors.Is(err, accounts.ErrDeactivated):
			fail(c, errUserDeactivated.WithMessage("This account has been deactivated"))
		case errors.Is(err, accounts.ErrInvalidCredentials):
			a.failedLoginLimit.Allow(string(userID))
			zerologFromGin(c).Info().Stringer("login_user_id", userID).Msg("Failed login")
			fail(c, mautrix.MForbidden.WithMessage("Invalid username or password"))
		default:
			a.internalError(c, err)
		}
		return
	}
	tokens, err := a.accounts.StartSession(ctx, userID, accounts.LoginOptions{
		DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
		Refreshable: req.RefreshToken, IP: c.ClientIP(),
	})
	if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, a.loginResponse(tokens))
}

// checkFailedLoginBudget refuses a password attempt for an account that has
// seen too many failures lately, whichever address they came from.
func (a *API) checkFailedLoginBudget(c *gin.Context, userID id.UserID) bool {
	if ok, retry := a.failedLoginLimit.Peek(string(userID)); !ok {
		rateLimited(c, retry)
		return false
	}
	return true
}

func (a *API) loginResponse(t *accounts.Tokens) gin.H {
	resp := gin.H{
		"user_id":      t.UserID,
		"access_token": t.AccessToken,
		"device_id":    t.DeviceID,
		"home_server":  a.cfg.ServerName,
		"well_known":   gin.H{"m.homeserver": gin.H{"base_url": a.cfg.ClientBaseURL()}},
	}
	if t.RefreshToken != "" {
		resp["refresh_token"] = t.RefreshToken
	}
	if t.ExpiresInMS > 0 {
		resp["expires_in_ms"] = t.ExpiresInMS
	}
	return resp
}

func (a *API) postRefresh(c *gin.Context) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	if req.RefreshToken == "" {
		fail(c, errMissingParam.WithMessage("refresh_token is required"))
		return
	}
	tokens, err := a.accounts.Refresh(c.Request.Context(), req.RefreshToken)
	if errors.Is(err, accounts.ErrUnknownToken) {
		fail(c, mautrix.MUnknownToken.WithMessage("Unknown refresh token").WithExtraField("soft_logout", false))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	resp := gin.H{"access_token": tokens.AccessToken, "refresh_token": tokens.RefreshToken}
	if tokens.ExpiresInMS > 0 {
		resp["expires_in_ms"] = tokens.ExpiresInMS
	}
	c.JSON(http.StatusOK, resp)
}

func (a *API) postLogout(c *gin.Context, sess *storage.Session) {
	if err := a.removeDevices(c.Request.Context(), sess.UserID, func(ctx context.Context) error {
		return a.accounts.Logout(ctx, sess)
	}); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (a *API) postLogoutAll(c *gin.Context, sess *storage.Session) {
	if err := a.removeDevices(c.Request.Context(), sess.UserID, func(ctx context.Context) error {
		return a.accounts.LogoutAll(ctx, sess.UserID)
	}); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (a *API) getWhoami(c *gin.Context, sess *storage.Session) {
	c.JSON(http.StatusOK, gin.H{"user_id": sess.UserID, "device_id": sess.DeviceID, "is_guest": false})
}
