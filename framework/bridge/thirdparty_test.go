package bridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

// thirdPartyNetwork is testNetwork describing itself as the third-party
// protocol "testproto": channels are locations ({"channel": "#general"}),
// remote users are users ({"user": "bob"}).
type thirdPartyNetwork struct{ *testNetwork }

func (n *thirdPartyNetwork) ThirdPartyProtocols() map[string]*bridge.Protocol {
	return map[string]*bridge.Protocol{"testproto": {
		UserFields:     []string{"user"},
		LocationFields: []string{"channel"},
		FieldTypes: map[string]bridge.FieldType{
			"user":    {Regexp: "[a-z]+", Placeholder: "bob"},
			"channel": {Regexp: "#[a-z]+", Placeholder: "#general"},
		},
		Instances: []bridge.ProtocolInstance{{NetworkID: "testnet", Desc: "Testnet", Fields: map[string]string{"network": "testnet"}}},
	}}
}

func (n *thirdPartyNetwork) alias(channel string) id.RoomAlias {
	return id.NewRoomAlias(n.bridge.AliasFor(channel), n.bridge.AS.Config.ServerName)
}

func (n *thirdPartyNetwork) ThirdPartyLocations(ctx context.Context, _ string, fields map[string]string) ([]bridge.ThirdPartyLocation, error) {
	channel := fields["channel"]
	if channel == "" {
		return nil, nil
	}
	info, err := n.ResolveChannel(ctx, channel)
	if errors.Is(err, bridge.ErrUnknownChannel) {
		return nil, fmt.Errorf("%w: %q is not a channel", bridge.ErrInvalidThirdPartyFields, channel)
	}
	return []bridge.ThirdPartyLocation{{Alias: n.alias(info.ID), Protocol: "testproto", Fields: map[string]string{"channel": info.ID}}}, nil
}

func (n *thirdPartyNetwork) ThirdPartyUsers(_ context.Context, _ string, fields map[string]string) ([]bridge.ThirdPartyUser, error) {
	if fields["user"] == "" {
		return nil, nil
	}
	return []bridge.ThirdPartyUser{{UserID: n.bridge.AS.Config.GhostID(fields["user"]), Protocol: "testproto", Fields: map[string]string{"user": fields["user"]}}}, nil
}

func (n *thirdPartyNetwork) ThirdPartyLocationsByAlias(_ context.Context, alias id.RoomAlias) ([]bridge.ThirdPartyLocation, error) {
	localpart, _, _ := strings.Cut(strings.TrimPrefix(string(alias), "#"), ":")
	channel, ok := strings.CutPrefix(localpart, n.bridge.AS.Config.AliasPrefix)
	if !ok || n.alias(channel) != alias {
		return nil, nil
	}
	return []bridge.ThirdPartyLocation{{Alias: alias, Protocol: "testproto", Fields: map[string]string{"channel": channel}}}, nil
}

func (n *thirdPartyNetwork) ThirdPartyUsersByID(_ context.Context, userID id.UserID) ([]bridge.ThirdPartyUser, error) {
	cfg := n.bridge.AS.Config
	if !cfg.IsGhost(userID) {
		return nil, nil
	}
	user, err := id.DecodeUserLocalpart(strings.TrimPrefix(userID.Localpart(), cfg.GhostPrefix))
	if err != nil {
		return nil, nil
	}
	return []bridge.ThirdPartyUser{{UserID: userID, Protocol: "testproto", Fields: map[string]string{"user": user}}}, nil
}

// TestThirdPartyNetworks: a network that describes itself as a third-party
// protocol is listed in the registration, and a Matrix client finds its
// protocol, its portal rooms and its ghosts through the homeserver's
// /thirdparty API (which asks the appservice).
func TestThirdPartyNetworks(t *testing.T) {
	ctx := context.Background()
	kit := testkit.Start(t)
	network := &thirdPartyNetwork{newTestNetwork(false)}
	cfg := &bridge.Config{Config: *kit.FrameworkConfig("test")}
	br, err := bridge.New(ctx, cfg, network, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	// The registration file the operator installs declares the protocol.
	data, err := os.ReadFile(cfg.Registration)
	if err != nil {
		t.Fatal(err)
	}
	var written struct {
		Protocols []string `yaml:"protocols"`
	}
	if err := yaml.Unmarshal(data, &written); err != nil || fmt.Sprint(written.Protocols) != "[testproto]" {
		t.Fatalf("registration file protocols = %v (%v), want [testproto]", written.Protocols, err)
	}
	kit.RegisterAppservice(br.AS.Registration)
	if err := br.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(br.Stop)
	alice := kit.NewUser("alice")
	server := kit.ServerName

	t.Run("protocols", func(t *testing.T) {
		var protocols map[string]bridge.Protocol
		if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "thirdparty", "protocols"), nil, &protocols); err != nil {
			t.Fatal(err)
		}
		p, ok := protocols["testproto"]
		if !ok || len(p.Instances) != 1 || p.Instances[0].NetworkID != "testnet" || p.Instances[0].Desc != "Testnet" ||
			p.FieldTypes["channel"].Placeholder != "#general" || fmt.Sprint(p.LocationFields) != "[channel]" {
			t.Errorf("protocols = %+v", protocols)
		}
		var one bridge.Protocol
		if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "thirdparty", "protocol", "testproto"), nil, &one); err != nil ||
			fmt.Sprint(one.UserFields) != "[user]" {
			t.Errorf("protocol testproto = %+v, %v", one, err)
		}
		_, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "thirdparty", "protocol", "nope"), nil, nil)
		if !errors.Is(err, mautrix.MNotFound) {
			t.Errorf("unknown protocol: %v, want M_NOT_FOUND", err)
		}
	})

	alias := id.NewRoomAlias("test_#general", server)
	t.Run("location leads to the portal", func(t *testing.T) {
		var locations []bridge.ThirdPartyLocation
		u := alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "thirdparty", "location", "testproto"}, map[string]string{"channel": "#general"})
		if _, err := alice.MakeRequest(ctx, http.MethodGet, u, nil, &locations); err != nil {
			t.Fatal(err)
		}
		if len(locations) != 1 || locations[0].Alias != alias || locations[0].Protocol != "testproto" || locations[0].Fields["channel"] != "#general" {
			t.Fatalf("locations = %+v, want %s", locations, alias)
		}
		// The alias is the portal's: joining it bridges the channel.
		if _, err := alice.JoinRoom(ctx, locations[0].Alias.String(), nil); err != nil {
			t.Fatal(err)
		}
		network.expect(t, "linked #general")

		u = alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "thirdparty", "location"}, map[string]string{"alias": alias.String()})
		locations = nil
		if _, err := alice.MakeRequest(ctx, http.MethodGet, u, nil, &locations); err != nil || len(locations) != 1 || locations[0].Fields["channel"] != "#general" {
			t.Errorf("reverse lookup of %s = %+v, %v", alias, locations, err)
		}
	})

	t.Run("user is the ghost", func(t *testing.T) {
		bob := br.AS.Config.GhostID("bob")
		var users []bridge.ThirdPartyUser
		u := alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "thirdparty", "user", "testproto"}, map[string]string{"user": "bob"})
		if _, err := alice.MakeRequest(ctx, http.MethodGet, u, nil, &users); err != nil || len(users) != 1 || users[0].UserID != bob {
			t.Errorf("user bob = %+v, %v; want %s", users, err, bob)
		}
		users = nil
		u = alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "thirdparty", "user"}, map[string]string{"userid": bob.String()})
		if _, err := alice.MakeRequest(ctx, http.MethodGet, u, nil, &users); err != nil || len(users) != 1 || users[0].Fields["user"] != "bob" {
			t.Errorf("reverse lookup of %s = %+v, %v", bob, users, err)
		}
	})

	// What the homeserver sees: the appservice endpoints themselves.
	asGet := func(path, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, br.AS.Config.URL+"/_matrix/app/v1/thirdparty/"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	errcode := func(body string) string {
		var e struct {
			Errcode string `json:"errcode"`
		}
		_ = json.Unmarshal([]byte(body), &e)
		return e.Errcode
	}
	hsToken := br.AS.Registration.ServerToken
	for _, c := range []struct {
		name, path, token string
		status            int
		body, errcode     string
	}{
		{"nothing matches", "location/testproto", hsToken, 200, "[]", ""},
		{"no user", "user/testproto?other=1", hsToken, 200, "[]", ""},
		{"unknown alias", "location?alias=" + url.QueryEscape("#elsewhere:"+server), hsToken, 200, "[]", ""},
		{"not a ghost", "user?userid=" + url.QueryEscape(alice.UserID.String()), hsToken, 200, "[]", ""},
		{"unknown protocol", "protocol/nope", hsToken, 404, "", "M_NOT_FOUND"},
		{"location of an unknown protocol", "location/nope?channel=%23general", hsToken, 404, "", "M_NOT_FOUND"},
		{"user of an unknown protocol", "user/nope?user=bob", hsToken, 404, "", "M_NOT_FOUND"},
		{"invalid field", "location/testproto?channel=general", hsToken, 400, "", "M_INVALID_PARAM"},
		{"alias missing", "location", hsToken, 400, "", "M_MISSING_PARAM"},
		{"not an alias", "location?alias=general", hsToken, 400, "", "M_INVALID_PARAM"},
		{"userid missing", "user", hsToken, 400, "", "M_MISSING_PARAM"},
		{"not a user ID", "user?userid=bob", hsToken, 400, "", "M_INVALID_PARAM"},
		{"wrong hs_token", "protocol/testproto", "not-the-token", 403, "", "M_FORBIDDEN"},
	} {
		status, body := asGet(c.path, c.token)
		if status != c.status || (c.body != "" && body != c.body) || errcode(body) != c.errcode {
			t.Errorf("%s: GET %s: HTTP %d %s, want %d %s%s", c.name, c.path, status, body, c.status, c.body, c.errcode)
		}
	}
	if status, body := asGet("protocol/testproto", hsToken); status != 200 || !strings.Contains(body, `"icon":""`) {
		t.Errorf("protocol: HTTP %d %s, want the spec's required icon key", status, body)
	}

	// generate-registration runs no network: it keeps the protocols the
	// file declares; a network that provides none clears them.
	gen := cfg.Config
	for _, c := range []struct {
		protocols []string
		changed   bool
		want      string
	}{{nil, false, "[testproto]"}, {[]string{}, true, "[]"}} {
		gen.Protocols = c.protocols
		reg, changed, err := gen.EnsureRegistration()
		if err != nil {
			t.Fatal(err)
		}
		if changed != c.changed || fmt.Sprint(reg.Protocols) != c.want {
			t.Errorf("registration with Protocols %#v: %v (rewritten: %v), want %s (rewritten: %v)", c.protocols, reg.Protocols, changed, c.want, c.changed)
		}
	}
}

// A network without third-party protocols declares none and serves no
// third-party endpoints.
func TestNoThirdPartyProtocols(t *testing.T) {
	kit := testkit.Start(t)
	br := startBridge(t, kit, newTestNetwork(false), nil)
	if len(br.AS.Registration.Protocols) != 0 {
		t.Errorf("registration protocols = %v, want none", br.AS.Registration.Protocols)
	}
	alice := kit.NewUser("alice")
	var protocols map[string]any
	if _, err := alice.MakeRequest(context.Background(), http.MethodGet, alice.BuildClientURL("v3", "thirdparty", "protocols"), nil, &protocols); err != nil || len(protocols) != 0 {
		t.Errorf("protocols = %v, %v; want none", protocols, err)
	}
}
