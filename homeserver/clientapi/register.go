package clientapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/appservice"
	"github.com/switchboard-im/switchboard/homeserver/config"
)

type registerRequest struct {
	Type                     string      `json:"type"`
	Username                 string      `json:"username"`
	Password                 string      `json:"password"`
	DeviceID                 id.DeviceID `json:"device_id"`
	InitialDeviceDisplayName *string     `json:"initial_device_display_name"`
	InhibitLogin             bool        `json:"inhibit_login"`
	RefreshToken             bool        `json:"refresh_token"`
}

// registrationFlows are the UIA flows offered for /register in each mode.
func (a *API) registrationFlows() [][]string {
	switch a.cfg.Registration.Mode {
	case config.RegistrationOpen:
		return [][]string{{authDummy}}
	case config.RegistrationToken:
		return [][]string{{authRegistrationToken}}
	}
	return nil
}

func (a *API) postRegister(c *gin.Context) {
	// An appservice registering a ghost authenticates with its as_token.
	var as *appservice.AppService
	if token, ok := accessToken(c); ok {
		if as = a.registry().ByASToken(token); as == nil {
			fail(c, mautrix.MUnknownToken.WithMessage("Unknown access token").WithExtraField("soft_logout", false))
			return
		}
	}
	if (as == nil || as.RateLimited()) && !limit(c, a.registerLimit, c.ClientIP()) {
		return
	}
	if kind := c.DefaultQuery("kind", "user"); kind == "guest" {
		fail(c, mautrix.MForbidden.WithMessage("Guest access is not enabled on this server"))
		return
	} else if kind != "user" {
		fail(c, mautrix.MInvalidParam.WithMessage("kind must be user or guest"))
		return
	}
	var req registerRequest
	raw, ok := a.readJSON(c, &req)
	if !ok {
		return
	}
	if as != nil || req.Type == authTypeAppservice {
		if as == nil {
			fail(c, mautrix.MMissingToken.WithMessage("m.login.application_service needs the application service's token"))
			return
		}
		if req.Type != authTypeAppservice {
			fail(c, mautrix.MBadJSON.WithMessage("Application services must register with type %s", authTypeAppservice))
			return
		}
		a.registerAppserviceUser(c, as, &req)
		return
	}
	flows := a.registrationFlows()
	if flows == nil {
		fail(c, mautrix.MForbidden.WithMessage("Registration is disabled on this server"))
		return
	}
	auth, ok := parseAuth(c, raw)
	if !ok {
		return
	}
	ctx := c.Request.Context()

	// The spec wants username and password problems reported before UIA.
	var userID id.UserID
	if req.Username != "" {
		var err error
		if userID, err = a.accounts.UserIDFor(req.Username); err != nil {
			fail(c, mautrix.MInvalidUsername.WithMessage("%s", err.Error()))
			return
		}
		if _, err := a.db.GetUser(ctx, userID); err == nil {
			fail(c, mautrix.MUserInUse.WithMessage("User ID already taken"))
			return
		}
		if !a.exclusiveUserOwner(c, userID, "") {
			return
		}
	}
	if req.Password != "" {
		if err := a.accounts.CheckPasswordPolicy(req.Password); err != nil {
			fail(c, errWeakPassword.WithMessage("%s", err.Error()))
			return
		}
	}

	sess := a.runUIA(c, uiaRequest{flows: flows, auth: auth})
	if sess == nil {
		return
	}
	if req.Password == "" {
		fail(c, errMissingParam.WithMessage("password is required"))
		return
	}
	if userID == "" {
		userID = id.NewUserID(random.StringCharset(12, "abcdefghijklmnopqrstuvwxyz0123456789"), a.cfg.ServerName)
	}

	newUser, err := a.accounts.PrepareUser(accounts.NewUser{UserID: userID, Password: req.Password})
	if err != nil {
		fail(c, errWeakPassword.WithMessage("%s", err.Error()))
		return
	}
	var tokens *accounts.Tokens
	err = a.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := a.accounts.CreateUser(ctx, newUser); err != nil {
			return err
		}
		if sess.RegistrationToken != "" {
			if err := a.db.CompleteRegistrationToken(ctx, sess.RegistrationToken); err != nil {
				return err
			}
		}
		if err := a.db.DeleteUIASession(ctx, sess.SessionID); err != nil {
			return err
		}
		if req.InhibitLogin {
			return nil
		}
		var err error
		tokens, err = a.accounts.StartSession(ctx, userID, accounts.LoginOptions{
			DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName,
			Refreshable: req.RefreshToken, IP: c.ClientIP(),
		})
		return err
	})
	switch {
	case errors.Is(err, accounts.ErrUserInUse):
		fail(c, mautrix.MUserInUse.WithMessage("User ID already taken"))
		return
	case errors.Is(err, accounts.ErrWeakPassword):
		fail(c, errWeakPassword.WithMessage("%s", err.Error()))
		return
	case err != nil:
		a.internalError(c, err)
		return
	}
	zerologFromGin(c).Info().Stringer("new_user_id", userID).Msg("Registered new user")
	if req.InhibitLogin {
		c.JSON(http.StatusOK, gin.H{"user_id": userID, "home_server": a.cfg.ServerName})
		return
	}
	c.JSON(http.StatusOK, a.loginResponse(tokens))
}

func (a *API) getRegisterAvailable(c *gin.Context) {
	if !limit(c, a.registerLimit, "available|"+c.ClientIP()) {
		return
	}
	username := c.Query("username")
	if username == "" {
		fail(c, errMissingParam.WithMessage("username is required"))
		return
	}
	userID, err := a.accounts.UserIDFor(username)
	if err != nil {
		fail(c, mautrix.MInvalidUsername.WithMessage("%s", err.Error()))
		return
	}
	if _, err := a.db.GetUser(c.Request.Context(), userID); err == nil {
		fail(c, mautrix.MUserInUse.WithMessage("User ID already taken"))
		return
	}
	c.JSON(http.StatusOK, gin.H{"available": true})
}

func (a *API) getRegistrationTokenValidity(c *gin.Context) {
	if a.cfg.Registration.Mode != config.RegistrationToken {
		fail(c, mautrix.MForbidden.WithMessage("Registration with tokens is not enabled on this server"))
		return
	}
	if !limit(c, a.registerLimit, "validity|"+c.ClientIP()) {
		return
	}
	token := c.Query("token")
	if token == "" {
		fail(c, errMissingParam.WithMessage("token is required"))
		return
	}
	t, err := a.db.GetRegistrationToken(c.Request.Context(), token)
	valid := err == nil && t.Valid(time.Now().UnixMilli())
	c.JSON(http.StatusOK, gin.H{"valid": valid})
}
