package bridge

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
)

// Third-party networks (spec: application service API, "Third-party
// networks"): a network that implements ThirdPartyProvider has its
// protocols listed in the registration, and the homeserver proxies the
// client API's /thirdparty/* lookups (Element's room directory and "join
// an IRC channel" dialogs) to the appservice endpoints served here:
//
//	GET /_matrix/app/v1/thirdparty/protocol/{protocol}
//	GET /_matrix/app/v1/thirdparty/location/{protocol}?{field}={value}…
//	GET /_matrix/app/v1/thirdparty/user/{protocol}?{field}={value}…
//	GET /_matrix/app/v1/thirdparty/location?alias={alias}
//	GET /_matrix/app/v1/thirdparty/user?userid={user ID}
//
// The appservice's token check (framework) already requires the hs_token
// there. An unknown protocol is 404 M_NOT_FOUND; a lookup that matches
// nothing is 200 with [].

// ThirdPartyProvider is implemented by a Network that describes its remote
// network as third-party protocols.
type ThirdPartyProvider interface {
	// ThirdPartyProtocols describes the protocols by ID ("irc"). It is
	// called by New, for the registration's protocol list, and for every
	// protocol query; it must not need the Bridge.
	ThirdPartyProtocols() map[string]*Protocol
	// ThirdPartyLocations finds the portal rooms (by alias) of the
	// locations that fields name; protocol is one of ThirdPartyProtocols'.
	// An error wrapping ErrInvalidThirdPartyFields is answered 400.
	ThirdPartyLocations(ctx context.Context, protocol string, fields map[string]string) ([]ThirdPartyLocation, error)
	// ThirdPartyUsers finds the Matrix users (ghosts) of the remote users
	// that fields name.
	ThirdPartyUsers(ctx context.Context, protocol string, fields map[string]string) ([]ThirdPartyUser, error)
	// ThirdPartyLocationsByAlias is the reverse lookup: the locations a
	// room alias leads to.
	ThirdPartyLocationsByAlias(ctx context.Context, alias id.RoomAlias) ([]ThirdPartyLocation, error)
	// ThirdPartyUsersByID is the reverse lookup: the remote users a Matrix
	// user (a ghost) stands for.
	ThirdPartyUsersByID(ctx context.Context, userID id.UserID) ([]ThirdPartyUser, error)
}

// ErrInvalidThirdPartyFields is wrapped by lookup errors the caller caused
// (a malformed field): they are answered 400 M_INVALID_PARAM.
var ErrInvalidThirdPartyFields = errors.New("invalid third-party lookup fields")

// Protocol is the spec's Protocol: the fields that identify the protocol's
// users and locations, how to fill them in, and the protocol's instances
// (an IRC bridge's networks).
type Protocol struct {
	UserFields     []string             `json:"user_fields"`
	LocationFields []string             `json:"location_fields"`
	Icon           id.ContentURIString  `json:"icon"`
	FieldTypes     map[string]FieldType `json:"field_types"`
	Instances      []ProtocolInstance   `json:"instances"`
}

// FieldType describes a field: a (coarse) regular expression its values
// match and an example value.
type FieldType struct {
	Regexp      string `json:"regexp"`
	Placeholder string `json:"placeholder"`
}

// ProtocolInstance is one instance of a protocol: an IRC network.
type ProtocolInstance struct {
	// NetworkID is unique across the protocol's instances.
	NetworkID string `json:"network_id"`
	// Desc is the instance's human-readable name.
	Desc string              `json:"desc"`
	Icon id.ContentURIString `json:"icon,omitempty"`
	// Fields are preset values clients search with ({"network": "libera"}).
	Fields map[string]string `json:"fields"`
	// BotUserID is the bridge bot, an extension matrix-appservice-irc
	// has and integration managers (Dimension) read.
	BotUserID id.UserID `json:"bot_user_id,omitempty"`
}

// ThirdPartyLocation is a portal room of a remote location, by alias.
type ThirdPartyLocation struct {
	Alias    id.RoomAlias      `json:"alias"`
	Protocol string            `json:"protocol"`
	Fields   map[string]string `json:"fields"`
}

// ThirdPartyUser is the Matrix user of a remote user. (The spec names the
// key "userid".)
type ThirdPartyUser struct {
	UserID   id.UserID         `json:"userid"`
	Protocol string            `json:"protocol"`
	Fields   map[string]string `json:"fields"`
}

const thirdPartyPrefix = "/_matrix/app/v1/thirdparty"

// errMissingParam is the spec's error for a required query parameter
// left out (mautrix has no value for it).
var errMissingParam = mautrix.RespError{ErrCode: "M_MISSING_PARAM", StatusCode: http.StatusBadRequest}

// thirdPartyProtocolIDs are the protocols network declares, sorted; none
// (empty, not nil: see framework.Config.Protocols) when it is no
// ThirdPartyProvider.
func thirdPartyProtocolIDs(network Network) []string {
	tp, ok := network.(ThirdPartyProvider)
	if !ok {
		return []string{}
	}
	return slices.Sorted(maps.Keys(tp.ThirdPartyProtocols()))
}

// registerThirdParty serves the third-party endpoints when the network
// provides them.
func (b *Bridge) registerThirdParty() {
	tp, ok := b.Network.(ThirdPartyProvider)
	if !ok {
		return
	}
	t := &thirdParty{b: b, tp: tp}
	r := b.AS.AS.Router
	r.HandleFunc("GET "+thirdPartyPrefix+"/protocol/{protocol}", t.protocol)
	r.HandleFunc("GET "+thirdPartyPrefix+"/location/{protocol}", t.lookup(t.locations))
	r.HandleFunc("GET "+thirdPartyPrefix+"/user/{protocol}", t.lookup(t.users))
	r.HandleFunc("GET "+thirdPartyPrefix+"/location", t.locationByAlias)
	r.HandleFunc("GET "+thirdPartyPrefix+"/user", t.userByID)
}

type thirdParty struct {
	b  *Bridge
	tp ThirdPartyProvider
}

func (t *thirdParty) protocol(w http.ResponseWriter, r *http.Request) {
	p := t.tp.ThirdPartyProtocols()[r.PathValue("protocol")]
	if p == nil {
		mautrix.MNotFound.WithMessage("Unknown protocol").WithStatus(http.StatusNotFound).Write(w)
		return
	}
	out := *p // the spec's required keys as [] and {}, never null
	out.UserFields = orEmpty(out.UserFields)
	out.LocationFields = orEmpty(out.LocationFields)
	out.Instances = orEmpty(slices.Clone(out.Instances))
	if out.FieldTypes == nil {
		out.FieldTypes = map[string]FieldType{}
	}
	for i, inst := range out.Instances {
		if inst.Fields == nil {
			out.Instances[i].Fields = map[string]string{}
		}
	}
	framework.WriteJSON(w, out)
}

// lookup answers a location or user lookup by fields: every query
// parameter but the legacy access_token is a field (its first value).
func (t *thirdParty) lookup(find func(ctx context.Context, protocol string, fields map[string]string) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		protocol := r.PathValue("protocol")
		if t.tp.ThirdPartyProtocols()[protocol] == nil {
			mautrix.MNotFound.WithMessage("Unknown protocol").WithStatus(http.StatusNotFound).Write(w)
			return
		}
		fields := map[string]string{}
		for k, v := range r.URL.Query() {
			if k != "access_token" && len(v) > 0 {
				fields[k] = v[0]
			}
		}
		found, err := find(r.Context(), protocol, fields)
		t.answer(w, found, err)
	}
}

func (t *thirdParty) locations(ctx context.Context, protocol string, fields map[string]string) (any, error) {
	found, err := t.tp.ThirdPartyLocations(ctx, protocol, fields)
	return orEmpty(found), err
}

func (t *thirdParty) users(ctx context.Context, protocol string, fields map[string]string) (any, error) {
	found, err := t.tp.ThirdPartyUsers(ctx, protocol, fields)
	return orEmpty(found), err
}

func (t *thirdParty) locationByAlias(w http.ResponseWriter, r *http.Request) {
	alias := r.URL.Query().Get("alias")
	if alias == "" {
		errMissingParam.WithMessage("alias is required").Write(w)
		return
	}
	if localpart, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":"); !strings.HasPrefix(alias, "#") || !ok || localpart == "" || server == "" {
		mautrix.MInvalidParam.WithMessage("alias is not a room alias").Write(w)
		return
	}
	found, err := t.tp.ThirdPartyLocationsByAlias(r.Context(), id.RoomAlias(alias))
	t.answer(w, orEmpty(found), err)
}

func (t *thirdParty) userByID(w http.ResponseWriter, r *http.Request) {
	userID := r.URL.Query().Get("userid")
	if userID == "" {
		errMissingParam.WithMessage("userid is required").Write(w)
		return
	}
	if _, _, err := id.UserID(userID).Parse(); err != nil {
		mautrix.MInvalidParam.WithMessage("userid is not a user ID").Write(w)
		return
	}
	found, err := t.tp.ThirdPartyUsersByID(r.Context(), id.UserID(userID))
	t.answer(w, orEmpty(found), err)
}

func (t *thirdParty) answer(w http.ResponseWriter, found any, err error) {
	switch {
	case errors.Is(err, ErrInvalidThirdPartyFields):
		mautrix.MInvalidParam.WithMessage(err.Error()).Write(w)
	case err != nil:
		t.b.Log.Error().Err(err).Msg("Third-party lookup failed")
		mautrix.MUnknown.WithMessage("Internal error").WithStatus(http.StatusInternalServerError).Write(w)
	default:
		framework.WriteJSON(w, found)
	}
}

// orEmpty makes a nil slice an empty one (JSON [] rather than null).
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
