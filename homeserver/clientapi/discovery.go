package clientapi

import (
	"net"
	"net/http"
	"net/url"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// SupportedVersions are the spec versions whose client-server rules the
// implemented endpoints follow. Extend it only together with the endpoints a
// version makes mandatory for clients.
var SupportedVersions = []string{
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
	"v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16",
}

func (a *API) getVersions(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{
		"versions": SupportedVersions,
		// No unstable features yet: advertising one we do not implement
		// would make clients call endpoints that 404.
		"unstable_features": gin.H{},
	})
}

func (a *API) getWellKnownClient(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"m.homeserver": gin.H{"base_url": a.cfg.ClientBaseURL()}})
}

func (a *API) getWellKnownServer(c *gin.Context) {
	server := a.cfg.WellKnown.Server
	if server == "" {
		// Federation is served on the client listener, so the public URL's
		// host and port are where other servers find us.
		u, _ := url.Parse(a.cfg.PublicURL)
		port := u.Port()
		if port == "" {
			port = "443"
			if u.Scheme == "http" {
				port = "80"
			}
		}
		server = net.JoinHostPort(u.Hostname(), port)
	}
	c.JSON(http.StatusOK, gin.H{"m.server": server})
}

func (a *API) getCapabilities(c *gin.Context, _ *storage.Session) {
	available := gin.H{}
	for _, v := range rooms.SupportedVersions {
		available[string(v)] = "stable"
	}
	c.JSON(http.StatusOK, gin.H{"capabilities": gin.H{
		"m.room_versions":   gin.H{"default": rooms.DefaultVersion, "available": available},
		"m.change_password": gin.H{"enabled": true},
		"m.set_displayname": gin.H{"enabled": true},
		"m.set_avatar_url":  gin.H{"enabled": true},
		"m.profile_fields":  gin.H{"enabled": true},
		"m.3pid_changes":    gin.H{"enabled": false},
		"m.get_login_token": gin.H{"enabled": false},
	}})
}

// NotFound answers every unknown path, as the spec asks.
func NotFound(c *gin.Context) {
	fail(c, mautrix.MUnrecognized.WithMessage("Unrecognized request: %s %s", c.Request.Method, c.Request.URL.Path))
}

// MethodNotAllowed answers a known path called with the wrong method.
func MethodNotAllowed(c *gin.Context) {
	fail(c, mautrix.MUnrecognized.WithMessage("Method %s not allowed here", c.Request.Method).WithStatus(http.StatusMethodNotAllowed))
}
