package clientapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// OpenIDTokenLifetime is how long an OpenID token may be exchanged for the
// user's identity (the expires_in clients are told).
const OpenIDTokenLifetime = time.Hour

// registerOpenID mounts the OpenID module: clients ask for a token, third
// parties exchange it at the federation API's userinfo endpoint, which is
// served on this router until there is a federation listener.
func (a *API) registerOpenID(r gin.IRouter) {
	for _, prefix := range clientPrefixes {
		r.POST(prefix+"/user/:userID/openid/request_token", a.authed(a.postOpenIDRequestToken))
	}
	r.GET("/_matrix/federation/v1/openid/userinfo", a.getOpenIDUserInfo)
}

func (a *API) postOpenIDRequestToken(c *gin.Context, sess *storage.Session) {
	if !ownUserParam(c, sess, "OpenID tokens") {
		return
	}
	// The body is "an empty object, reserved for future expansion"; some
	// clients (mautrix-go) send none at all.
	if _, ok := a.readOptionalJSON(c, nil); !ok {
		return
	}
	token := random.Token("sboi", 32)
	expires := time.Now().Add(OpenIDTokenLifetime)
	if err := a.db.InsertOpenIDToken(c.Request.Context(), accounts.HashToken(token), sess.UserID, expires.UnixMilli()); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, &mautrix.RespOpenIDToken{
		AccessToken:      token,
		TokenType:        "Bearer",
		MatrixServerName: a.cfg.ServerName,
		ExpiresIn:        int(OpenIDTokenLifetime / time.Second),
	})
}

// getOpenIDUserInfo is GET /_matrix/federation/v1/openid/userinfo. Tokens
// are looked up by SHA-256 digest, so timing says nothing about them, and
// they are only good here: authenticate() never accepts them.
func (a *API) getOpenIDUserInfo(c *gin.Context) {
	token := c.Query("access_token")
	if token == "" {
		fail(c, mautrix.MMissingToken.WithMessage("Missing access_token parameter"))
		return
	}
	userID, err := a.db.LookupOpenIDToken(c.Request.Context(), accounts.HashToken(token))
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MUnknownToken.WithMessage("Access token unknown or expired"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"sub": userID})
}
