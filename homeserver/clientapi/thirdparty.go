package clientapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/appservice"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Third-party lookups (spec: "Third-party Networks") are answered by the
// appservices that declare the protocol in their registration; Element's
// room directory uses them to list IRC networks and the like.

func (a *API) registerThirdParty(g gin.IRouter) {
	g.GET("/thirdparty/protocols", a.authed(a.getThirdPartyProtocols))
	g.GET("/thirdparty/protocol/:protocol", a.authed(a.getThirdPartyProtocol))
	g.GET("/thirdparty/location/:protocol", a.authed(a.thirdPartyLookup("location")))
	g.GET("/thirdparty/user/:protocol", a.authed(a.thirdPartyLookup("user")))
	g.GET("/thirdparty/location", a.authed(a.thirdPartyReverse("location", "alias")))
	g.GET("/thirdparty/user", a.authed(a.thirdPartyReverse("user", "userid")))
}

// maxThirdPartyBody bounds what an appservice may answer.
const maxThirdPartyBody = 1 << 20

// asGet calls an appservice's /_matrix/app/v1 API with its hs_token and
// decodes a JSON answer into into (nil: only the 200 matters); ok is false
// on any failure (logged).
func (a *API) asGet(ctx context.Context, as *appservice.AppService, path string, query url.Values, into any) bool {
	base := strings.TrimRight(as.Registration.URL, "/")
	if base == "" {
		return false
	}
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	u := base + "/_matrix/app/v1/" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(qctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+as.Registration.ServerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		zerolog.Ctx(ctx).Info().Err(err).Str("as_id", as.ID()).Str("path", path).Msg("Appservice query failed")
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	if into == nil {
		return true
	}
	return json.NewDecoder(io.LimitReader(resp.Body, maxThirdPartyBody)).Decode(into) == nil
}

// protocolServices returns the appservices declaring protocol.
func (a *API) protocolServices(protocol string) []*appservice.AppService {
	var out []*appservice.AppService
	for _, as := range a.registry().All() {
		if slices.Contains(as.Registration.Protocols, protocol) {
			out = append(out, as)
		}
	}
	return out
}

// protocolInfo merges what the appservices say about a protocol: the first
// answer's fields, with every answer's instances.
func (a *API) protocolInfo(ctx context.Context, protocol string) map[string]any {
	var merged map[string]any
	for _, as := range a.protocolServices(protocol) {
		var info map[string]any
		if !a.asGet(ctx, as, "thirdparty/protocol/"+url.PathEscape(protocol), nil, &info) {
			continue
		}
		instances, _ := info["instances"].([]any)
		if merged == nil {
			merged = info
			merged["instances"] = instances
			continue
		}
		existing, _ := merged["instances"].([]any)
		merged["instances"] = append(existing, instances...)
	}
	return merged
}

func (a *API) getThirdPartyProtocols(c *gin.Context, _ *storage.Session) {
	protocols := map[string]bool{}
	for _, as := range a.registry().All() {
		for _, p := range as.Registration.Protocols {
			protocols[p] = true
		}
	}
	out := map[string]any{}
	for p := range protocols {
		if info := a.protocolInfo(c.Request.Context(), p); info != nil {
			out[p] = info
		}
	}
	c.JSON(http.StatusOK, out)
}

func (a *API) getThirdPartyProtocol(c *gin.Context, _ *storage.Session) {
	info := a.protocolInfo(c.Request.Context(), c.Param("protocol"))
	if info == nil {
		fail(c, mautrix.MNotFound.WithMessage("Unknown protocol"))
		return
	}
	c.JSON(http.StatusOK, info)
}

// thirdPartyLookup proxies /thirdparty/{location,user}/{protocol} to the
// protocol's appservices and concatenates their answers.
func (a *API) thirdPartyLookup(kind string) func(*gin.Context, *storage.Session) {
	return func(c *gin.Context, _ *storage.Session) {
		protocol := c.Param("protocol")
		services := a.protocolServices(protocol)
		if len(services) == 0 {
			fail(c, mautrix.MNotFound.WithMessage("Unknown protocol"))
			return
		}
		out := []any{}
		for _, as := range services {
			var found []any
			if a.asGet(c.Request.Context(), as, "thirdparty/"+kind+"/"+url.PathEscape(protocol), c.Request.URL.Query(), &found) {
				out = append(out, found...)
			}
		}
		c.JSON(http.StatusOK, out)
	}
}

// thirdPartyReverse proxies /thirdparty/location?alias= and
// /thirdparty/user?userid= to every appservice with protocols.
func (a *API) thirdPartyReverse(kind, param string) func(*gin.Context, *storage.Session) {
	return func(c *gin.Context, _ *storage.Session) {
		value := c.Query(param)
		if value == "" {
			fail(c, errMissingParam.WithMessage("%s is required", param))
			return
		}
		out := []any{}
		for _, as := range a.registry().All() {
			if len(as.Registration.Protocols) == 0 {
				continue
			}
			var found []any
			if a.asGet(c.Request.Context(), as, "thirdparty/"+kind, url.Values{param: {value}}, &found) {
				out = append(out, found...)
			}
		}
		c.JSON(http.StatusOK, out)
	}
}
