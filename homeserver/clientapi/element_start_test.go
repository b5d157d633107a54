package clientapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// elementRequest is one request Element (element-web on matrix-js-sdk)
// makes while a user logs in and opens their first room.
type elementRequest struct {
	method, path string
	body         any
	// notFound is the errcode the spec has the server answer with 404
	// here ("" when a 404 would be a missing endpoint).
	notFound string
	why      string
}

// TestElementStartRequests replays what Element asks as a user logs in,
// and then opens a room, and checks that every request is answered as the
// spec says: 2xx, or one of the 404s the spec defines.
//
// Left out, because other parts of the server own and test them: the E2EE
// key endpoints (/keys/upload, /keys/query, /keys/device_signing/upload,
// /room_keys/version), /pushers and /notifications. Not asked by today's
// Element: /joined_groups (communities, removed from Element in 2022 and
// never in the spec) and the unstable MSC3814 dehydrated-device endpoints
// (Element asks only when /versions advertises them).
func TestElementStartRequests(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		cli := srv.NewUser("alice")
		me := url.PathEscape(string(cli.UserID))
		room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "First room"})
		if err != nil {
			t.Fatal(err)
		}
		roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room.RoomID))
		event := sendText(t, cli, room.RoomID, "hello")

		filter := map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 20, "unread_thread_notifications": true},
			"state": map[string]any{"lazy_load_members": true}}}
		var filterID string
		login := []elementRequest{
			// Before logging in: discovery, then the login flows.
			{method: "GET", path: "/.well-known/matrix/client"},
			{method: "GET", path: "/_matrix/client/versions"},
			{method: "GET", path: "/_matrix/client/v1/auth_metadata", notFound: "M_UNRECOGNIZED",
				why: "no OAuth 2.0 API: clients fall back to /login (spec: Authentication API discovery)"},
			{method: "GET", path: "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer", notFound: "M_UNRECOGNIZED",
				why: "unstable MSC2965, asked by older Element; unknown endpoints are M_UNRECOGNIZED"},
			{method: "GET", path: "/_matrix/client/v3/login"},
			// After logging in (matrix-js-sdk startClient and Element's stores).
			{method: "GET", path: "/_matrix/client/v3/account/whoami"},
			{method: "GET", path: "/_matrix/client/v3/capabilities"},
			{method: "GET", path: "/_matrix/client/v3/pushrules/"},
			{method: "POST", path: "/_matrix/client/v3/user/" + me + "/filter", body: filter},
			{method: "GET", path: "/_matrix/client/v3/voip/turnServer"},
			{method: "GET", path: "/_matrix/client/v3/thirdparty/protocols"},
			{method: "GET", path: "/_matrix/client/v3/profile/" + me},
			{method: "GET", path: "/_matrix/client/v3/presence/" + me + "/status"},
			{method: "PUT", path: "/_matrix/client/v3/presence/" + me + "/status", body: map[string]any{"presence": "online"}},
			{method: "GET", path: "/_matrix/client/v3/devices"},
			{method: "GET", path: "/_matrix/client/v3/account/3pid"},
			{method: "GET", path: "/_matrix/client/v1/media/config"},
			{method: "GET", path: "/_matrix/media/v3/config"},
			{method: "GET", path: "/_matrix/client/v3/user/" + me + "/account_data/m.secret_storage.default_key", notFound: "M_NOT_FOUND",
				why: "no such account data yet (spec: GET account_data answers 404 M_NOT_FOUND)"},
			{method: "PUT", path: "/_matrix/client/v3/user/" + me + "/account_data/im.vector.analytics", body: map[string]any{"pseudonymousAnalyticsOptIn": false}},
			{method: "GET", path: "/_matrix/client/v3/user/" + me + "/account_data/im.vector.analytics"},
			{method: "POST", path: "/_matrix/client/v3/user/" + me + "/openid/request_token", body: map[string]any{}},
			{method: "POST", path: "/_matrix/client/v3/user_directory/search", body: map[string]any{"search_term": "bob", "limit": 10}},
			{method: "POST", path: "/_matrix/client/v3/publicRooms", body: map[string]any{"limit": 20}},
			{method: "POST", path: "/_matrix/client/v3/search", body: map[string]any{"search_categories": map[string]any{
				"room_events": map[string]any{"search_term": "hello", "filter": map[string]any{"limit": 10}, "order_by": "recent",
					"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true}}}}},
			// Opening the room.
			{method: "GET", path: roomPath + "/members?not_membership=leave"},
			{method: "GET", path: roomPath + "/state"},
			{method: "GET", path: roomPath + "/messages?dir=b&limit=20"},
			{method: "GET", path: roomPath + "/context/" + url.PathEscape(string(event)) + "?limit=10"},
			{method: "GET", path: "/_matrix/client/v1" + strings.TrimPrefix(roomPath, "/_matrix/client/v3") + "/threads?limit=10"},
			{method: "POST", path: roomPath + "/read_markers", body: map[string]any{"m.fully_read": event, "m.read": event}},
			{method: "PUT", path: roomPath + "/typing/" + me, body: map[string]any{"typing": false}},
			{method: "GET", path: "/_matrix/client/v3/user/" + me + "/rooms/" + url.PathEscape(string(room.RoomID)) + "/tags"},
			{method: "GET", path: "/_matrix/client/v3/directory/list/room/" + url.PathEscape(string(room.RoomID))},
		}
		if !searchAvailable(t, uri) {
			// A test binary without SQLite's FTS5 cannot search (search_test.go
			// says so); the rest of the start-up does not depend on it.
			login = slices.DeleteFunc(login, func(r elementRequest) bool { return strings.HasSuffix(r.path, "/search") })
		}
		for _, req := range login {
			t.Run(req.method+" "+req.path, func(t *testing.T) {
				var body []byte
				if req.body != nil {
					body, _ = json.Marshal(req.body)
				}
				var out any
				_, err := cli.MakeFullRequest(ctx, mautrix.FullRequest{Method: req.method, URL: srv.URL + req.path,
					RequestBytes: body, ResponseJSON: &out, MaxAttempts: 1})
				var httpErr mautrix.HTTPError
				switch {
				case err == nil && req.notFound != "":
					t.Errorf("answered 2xx where the spec has %s (%s)", req.notFound, req.why)
				case err == nil:
					if obj, ok := out.(map[string]any); ok && strings.HasSuffix(req.path, "/filter") {
						filterID, _ = obj["filter_id"].(string)
					}
				case errors.As(err, &httpErr) && httpErr.Response.StatusCode == http.StatusNotFound:
					code := ""
					if httpErr.RespError != nil {
						code = httpErr.RespError.ErrCode
					}
					if req.notFound == "" || code != req.notFound {
						t.Errorf("404 %s: %v", code, err)
					}
				default:
					t.Errorf("%v", err)
				}
			})
		}
		// The filter Element made comes back, and the first sync uses it.
		for _, path := range []string{"/_matrix/client/v3/user/" + me + "/filter/" + filterID,
			"/_matrix/client/v3/sync?filter=" + filterID + "&timeout=0&set_presence=online"} {
			if _, err := cli.MakeFullRequest(ctx, mautrix.FullRequest{Method: "GET", URL: srv.URL + path, MaxAttempts: 1}); err != nil {
				t.Errorf("GET %s: %v", path, err)
			}
		}
		// No TURN server configured: the empty object matrix-js-sdk takes
		// for "no TURN" (Synapse's answer).
		var turn map[string]any
		if _, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildClientURL("v3", "voip", "turnServer"), nil, &turn); err != nil || len(turn) != 0 {
			t.Errorf("turnServer = %v, %v", turn, err)
		}
	})
}
