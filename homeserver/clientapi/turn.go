package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// getTurnServer hands out the configured TURN server (config section turn),
// as Synapse does.
//
// Without turn.uris the answer is an empty object, as Synapse gives without
// TURN: matrix-js-sdk then runs calls without TURN and asks again later,
// where an error would be reported to the user, and a response with an
// empty uris list would make browsers refuse the ICE server (WebRTC
// requires urls to be non-empty).
//
// turn.allow_guests is not checked: this server registers no guest
// accounts, so every session is a full user's.
//
// There is no rate limit: the answer costs one HMAC, and asking again gives
// a caller nothing more than the credentials it already has.
func (a *API) getTurnServer(c *gin.Context, sess *storage.Session) {
	if len(a.cfg.TURN.URIs) == 0 {
		c.JSON(http.StatusOK, gin.H{})
		return
	}
	c.JSON(http.StatusOK, turnCredentials(&a.cfg.TURN, sess.UserID, time.Now()))
}

// turnCredentials are the credentials user gets at now. With a shared
// secret they follow the TURN REST API draft (coturn's use-auth-secret):
// the username is "EXPIRY:USER" with EXPIRY in Unix seconds, the password
// the base64 (padded) HMAC-SHA1 of the username keyed with the secret, so
// coturn checks them without asking us and refuses them after EXPIRY.
func turnCredentials(cfg *config.TURNConfig, user id.UserID, now time.Time) *mautrix.RespTurnServer {
	ttl := int(cfg.UserLifetime.D() / time.Second)
	resp := &mautrix.RespTurnServer{Username: cfg.Username, Password: cfg.Password, TTL: ttl, URIs: cfg.URIs}
	if cfg.SharedSecret != "" {
		resp.Username = strconv.FormatInt(now.Unix()+int64(ttl), 10) + ":" + string(user)
		mac := hmac.New(sha1.New, []byte(cfg.SharedSecret))
		mac.Write([]byte(resp.Username))
		resp.Password = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	return resp
}
