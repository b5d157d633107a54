package clientapi

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/switchboard-im/switchboard/homeserver/push"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// registerPushRules serves the read side of /pushrules with the spec's
// server-default rules; user-defined rules come with the push issue.
func (a *API) registerPushRules(g gin.IRouter) {
	g.GET("/pushrules/", a.authed(a.getPushRules))
	g.GET("/pushrules", a.authed(a.getPushRules))
	g.GET("/pushrules/global/", a.authed(a.getGlobalPushRules))
}

func (a *API) getPushRules(c *gin.Context, sess *storage.Session) {
	c.JSON(http.StatusOK, gin.H{"global": push.DefaultRuleset(sess.UserID)})
}

func (a *API) getGlobalPushRules(c *gin.Context, sess *storage.Session) {
	c.Data(http.StatusOK, "application/json", push.DefaultRuleset(sess.UserID))
}
