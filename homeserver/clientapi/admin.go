package clientapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// adminNonceLifetime is how long a shared-secret registration nonce works
// (Synapse: 60 s).
const adminNonceLifetime = time.Minute

func (a *API) sharedSecretEnabled(c *gin.Context) bool {
	if a.cfg.Registration.SharedSecret == "" {
		fail(c, mautrix.MForbidden.WithMessage("Shared-secret registration is disabled"))
		return false
	}
	return true
}

func (a *API) getAdminRegisterNonce(c *gin.Context) {
	if !a.sharedSecretEnabled(c) || !limit(c, a.adminRegLimit, c.ClientIP()) {
		return
	}
	nonce := random.String(32)
	if err := a.db.InsertAdminNonce(c.Request.Context(), nonce); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"nonce": nonce})
}

type adminRegisterRequest struct {
	Nonce        string `json:"nonce"`
	Username     string `json:"username"`
	Password     string `json:"password"`
	Admin        bool   `json:"admin"`
	UserType     string `json:"user_type"`
	Displayname  string `json:"displayname"`
	InhibitLogin bool   `json:"inhibit_login"`
	MAC          string `json:"mac"`
}

// mac is Synapse's HMAC-SHA1 over nonce, username, password, admin flag
// and optional user type, NUL-separated.
func (r *adminRegisterRequest) mac(secret string) []byte {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(r.Nonce))
	m.Write([]byte{0})
	m.Write([]byte(r.Username))
	m.Write([]byte{0})
	m.Write([]byte(r.Password))
	m.Write([]byte{0})
	if r.Admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if r.UserType != "" {
		m.Write([]byte{0})
		m.Write([]byte(r.UserType))
	}
	return m.Sum(nil)
}

func (a *API) postAdminRegister(c *gin.Context) {
	if !a.sharedSecretEnabled(c) || !limit(c, a.adminRegLimit, c.ClientIP()) {
		return
	}
	var req adminRegisterRequest
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	for name, v := range map[string]string{"nonce": req.Nonce, "username": req.Username, "password": req.Password, "mac": req.MAC} {
		if v == "" {
			fail(c, errMissingParam.WithMessage("%s is required", name))
			return
		}
	}
	if req.UserType != "" && req.UserType != "bot" && req.UserType != "support" {
		fail(c, mautrix.MInvalidParam.WithMessage("user_type must be bot or support"))
		return
	}
	ctx := c.Request.Context()
	// The nonce is spent before the MAC is checked, so each guess at the
	// MAC costs a fresh nonce.
	fresh, err := a.db.ConsumeAdminNonce(ctx, req.Nonce, time.Now().Add(-adminNonceLifetime).UnixMilli())
	if err != nil {
		a.internalError(c, err)
		return
	} else if !fresh {
		fail(c, mautrix.MForbidden.WithMessage("Unrecognised, expired or already used nonce"))
		return
	}
	given, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(given, req.mac(a.cfg.Registration.SharedSecret)) {
		zerologFromGin(c).Warn().Msg("Shared-secret registration with a wrong MAC")
		fail(c, mautrix.MForbidden.WithMessage("HMAC incorrect"))
		return
	}
	userID, err := a.accounts.UserIDFor(req.Username)
	if err != nil {
		fail(c, mautrix.MInvalidUsername.WithMessage("%s", err.Error()))
		return
	}
	newUser, err := a.accounts.PrepareUser(accounts.NewUser{UserID: userID, Password: req.Password, Admin: req.Admin,
		UserType: req.UserType, DisplayName: req.Displayname})
	if err != nil {
		fail(c, errWeakPassword.WithMessage("%s", err.Error()))
		return
	}
	var tokens *accounts.Tokens
	err = a.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		err := a.accounts.CreateUser(ctx, newUser)
		if err != nil || req.InhibitLogin {
			return err
		}
		tokens, err = a.accounts.StartSession(ctx, userID, accounts.LoginOptions{IP: c.ClientIP()})
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
	zerologFromGin(c).Info().Stringer("new_user_id", userID).Bool("admin", req.Admin).Msg("Registered user with shared secret")
	resp := gin.H{"user_id": userID, "home_server": a.cfg.ServerName}
	if tokens != nil {
		resp["access_token"], resp["device_id"] = tokens.AccessToken, tokens.DeviceID
	}
	c.JSON(http.StatusOK, resp)
}

func (a *API) listRegistrationTokens(c *gin.Context, _ *storage.Session) {
	tokens, err := a.db.ListRegistrationTokens(c.Request.Context())
	if err != nil {
		a.internalError(c, err)
		return
	}
	if v := c.Query("valid"); v == "true" || v == "false" {
		now := time.Now().UnixMilli()
		filtered := tokens[:0]
		for _, t := range tokens {
			if t.Valid(now) == (v == "true") {
				filtered = append(filtered, t)
			}
		}
		tokens = filtered
	}
	c.JSON(http.StatusOK, gin.H{"registration_tokens": tokens})
}

func (a *API) newRegistrationToken(c *gin.Context, _ *storage.Session) {
	var req struct {
		Token       string `json:"token"`
		UsesAllowed *int64 `json:"uses_allowed"`
		ExpiryTime  *int64 `json:"expiry_time"`
		Length      int    `json:"length"`
	}
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	t, err := a.accounts.CreateRegistrationToken(c.Request.Context(), accounts.TokenSpec{
		Token: req.Token, Length: req.Length, UsesAllowed: req.UsesAllowed, ExpiryTS: req.ExpiryTime})
	switch {
	case errors.Is(err, accounts.ErrInvalidToken):
		fail(c, mautrix.MInvalidParam.WithMessage("%s", err.Error()))
	case errors.Is(err, storage.ErrTokenExists):
		fail(c, mautrix.MInvalidParam.WithMessage("Token already exists"))
	case err != nil:
		a.internalError(c, err)
	default:
		c.JSON(http.StatusOK, t)
	}
}

func (a *API) getRegistrationToken(c *gin.Context, _ *storage.Session) {
	t, err := a.db.GetRegistrationToken(c.Request.Context(), c.Param("token"))
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("No such registration token"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, t)
}

func (a *API) putRegistrationToken(c *gin.Context, _ *storage.Session) {
	ctx := c.Request.Context()
	token := c.Param("token")
	t, err := a.db.GetRegistrationToken(ctx, token)
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("No such registration token"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	// Absent keys keep their value; null clears the limit.
	for key, dst := range map[string]**int64{"uses_allowed": &t.UsesAllowed, "expiry_time": &t.ExpiryTS} {
		if v, present := raw[key]; present {
			var n *int64
			if err := json.Unmarshal(v, &n); err != nil {
				fail(c, mautrix.MInvalidParam.WithMessage("%s must be an integer or null", key))
				return
			}
			*dst = n
		}
	}
	if err := accounts.CheckTokenLimits(t.UsesAllowed, t.ExpiryTS); err != nil {
		fail(c, mautrix.MInvalidParam.WithMessage("%s", err.Error()))
		return
	}
	if err := a.db.UpdateRegistrationToken(ctx, token, t.UsesAllowed, t.ExpiryTS); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, t)
}

func (a *API) deleteRegistrationToken(c *gin.Context, _ *storage.Session) {
	err := a.db.DeleteRegistrationToken(c.Request.Context(), c.Param("token"))
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("No such registration token"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}
