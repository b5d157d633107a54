package clientapi

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Small endpoints that Element (matrix-js-sdk) calls as a user logs in,
// answered as the spec says rather than with a 404 (element_start_test.go
// lists the whole start-up sequence).

func (a *API) registerElement(r gin.IRouter) {
	for _, prefix := range clientPrefixes {
		r.GET(prefix+"/voip/turnServer", a.authed(a.getTurnServer))
		r.GET(prefix+"/account/3pid", a.authed(a.getThreePIDs))
	}
	// GET /_matrix/client/v1/auth_metadata (OAuth 2.0 API discovery, spec
	// v1.15) is deliberately not routed: a server without the OAuth 2.0 API
	// answers 404 M_UNRECOGNIZED, which NotFound gives, and clients then use
	// the legacy login API.
}

// getThreePIDs: this server keeps no third-party identifiers (e-mail
// addresses, phone numbers) for accounts; capabilities says so too
// (m.3pid_changes disabled).
func (a *API) getThreePIDs(c *gin.Context, _ *storage.Session) {
	c.JSON(http.StatusOK, gin.H{"threepids": []any{}})
}
