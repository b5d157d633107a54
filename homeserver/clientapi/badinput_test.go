package clientapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// The bad-input suite: every way a client (or an attacker) can get a
// request wrong must be answered with the spec's standard error response —
// a JSON object with string errcode and error, the right HTTP status,
// Content-Type application/json and the CORS headers browsers need — and
// nothing may panic or leak a 500.
//
// Requests that no client library would send (broken JSON, wrong types,
// oversize or non-UTF-8 bodies, odd Authorization headers) go out through
// net/http; everything else through mautrix, the way real clients call us.

const (
	// biPassword is every test user's password (the one hstest.NewUser sets).
	biPassword = "correct horse battery staple"
	// biSmallBody is http.max_body_bytes on the small-body server.
	biSmallBody = 4096
)

// Server profiles the table's rows run against.
const (
	// biOpen: registration open, default 1 MiB body limit.
	biOpen = "open"
	// biSmall: registration closed (the default), 4 KiB body limit.
	biSmall = "small"
)

var biProfiles = map[string]func(*config.Config){
	biOpen:  func(c *config.Config) { c.Registration.Mode = config.RegistrationOpen },
	biSmall: func(c *config.Config) { c.HTTP.MaxBodyBytes = biSmallBody },
}

// Errors the spec defines that mautrix has no value for.
var (
	biMissingParam   = mautrix.RespError{ErrCode: "M_MISSING_PARAM", StatusCode: http.StatusBadRequest}
	biKeyTooLarge    = mautrix.RespError{ErrCode: "M_KEY_TOO_LARGE", StatusCode: http.StatusBadRequest}
	biProfileTooBig  = mautrix.RespError{ErrCode: "M_PROFILE_TOO_LARGE", StatusCode: http.StatusBadRequest}
	biUnknownAt400   = mautrix.MUnknown.WithStatus(http.StatusBadRequest)
	biUnrecognized   = mautrix.MUnrecognized
	biMethodNotAllow = mautrix.MUnrecognized.WithStatus(http.StatusMethodNotAllowed)
)

// biEnv is one running server with its users.
type biEnv struct {
	srv          *hstest.Server
	alice, bob   id.UserID
	aliceToken   string
	aliceDevice  id.DeviceID
	bobToken     string
	adminToken   string
	adminDevice  id.DeviceID
	adminUserID  id.UserID
	messagesSeen map[string]string // row name -> error message, for sameErrorAs
}

func biSetup(t *testing.T, uri string, mutate func(*config.Config)) *biEnv {
	t.Helper()
	srv := hstest.Start(t, uri, mutate)
	e := &biEnv{srv: srv, messagesSeen: map[string]string{}}
	alice := srv.NewUser("alice")
	e.alice, e.aliceToken, e.aliceDevice = alice.UserID, alice.AccessToken, alice.DeviceID
	bob := srv.NewUser("bob")
	e.bob, e.bobToken = bob.UserID, bob.AccessToken
	e.adminUserID = srv.CreateUser("root", biPassword, true)
	admin := srv.Login("root", biPassword)
	e.adminToken, e.adminDevice = admin.AccessToken, admin.DeviceID
	return e
}

// client returns a mautrix client acting as who: "" (no token), "alice",
// "bob", "admin", or "bad" (a well-formed token the server never issued).
func (e *biEnv) client(t *testing.T, who string) *mautrix.Client {
	t.Helper()
	cli := e.srv.Client()
	cli.DefaultHTTPRetries = 0
	switch who {
	case "":
	case "alice":
		cli.UserID, cli.AccessToken = e.alice, e.aliceToken
	case "bob":
		cli.UserID, cli.AccessToken = e.bob, e.bobToken
	case "admin":
		cli.UserID, cli.AccessToken = e.adminUserID, e.adminToken
	case "bad":
		cli.UserID, cli.AccessToken = e.alice, "sbat_thisTokenWasNeverIssuedByTheServer0123"
	default:
		t.Fatalf("unknown identity %q", who)
	}
	return cli
}

func (e *biEnv) token(who string) string {
	switch who {
	case "alice":
		return e.aliceToken
	case "bob":
		return e.bobToken
	case "admin":
		return e.adminToken
	case "bad":
		return "sbat_thisTokenWasNeverIssuedByTheServer0123"
	}
	return ""
}

// expand fills {alice}, {bob} and {alice_device} in a path.
func (e *biEnv) expand(path string) string {
	return strings.NewReplacer(
		"{alice}", url.PathEscape(string(e.alice)),
		"{bob}", url.PathEscape(string(e.bob)),
		"{alice_device}", url.PathEscape(string(e.aliceDevice)),
	).Replace(path)
}

// biResp is what the client saw.
type biResp struct {
	status int
	header http.Header
	body   []byte
	err    error // the mautrix error, for client-library requests
}

// biRaw sends a request with net/http, byte for byte as given. chunked
// hides the length so the server must enforce its limit while reading.
func biRaw(t *testing.T, method, target string, header http.Header, body []byte, chunked bool) biResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // not a *bytes.Reader: no Content-Length
		}
	}
	req, err := http.NewRequestWithContext(t.Context(), method, target, rd)
	if err != nil {
		t.Fatalf("build %s %s: %v", method, target, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return biResp{status: res.StatusCode, header: res.Header, body: data}
}

// biFromMautrix turns the outcome of a mautrix call into a biResp; the
// call must have failed with an HTTP response.
func biFromMautrix(t *testing.T, err error, body []byte) biResp {
	t.Helper()
	if err == nil {
		t.Fatalf("request succeeded, want an error")
	}
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		t.Fatalf("want an HTTP error response, got %v", err)
	}
	if body == nil && httpErr.RespError != nil {
		body, _ = json.Marshal(httpErr.RespError.ExtraData)
	}
	return biResp{status: httpErr.Response.StatusCode, header: httpErr.Response.Header, body: body, err: err}
}

// biCheckJSONHeaders checks what every response must carry.
func biCheckJSONHeaders(t *testing.T, r biResp) {
	t.Helper()
	if got := r.header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin = %q, want \"*\"", got)
	}
	ct := r.header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
}

// biCheckError asserts a standard error response and returns its object.
func biCheckError(t *testing.T, r biResp, want mautrix.RespError, status int) map[string]any {
	t.Helper()
	if status == 0 {
		status = want.StatusCode
	}
	if r.status != status {
		t.Errorf("HTTP status = %d, want %d (body %s)", r.status, status, biShort(r.body))
	}
	biCheckJSONHeaders(t, r)
	var obj map[string]any
	if err := json.Unmarshal(r.body, &obj); err != nil || obj == nil {
		t.Fatalf("body is not a JSON object: %v: %s", err, biShort(r.body))
	}
	code, ok := obj["errcode"].(string)
	if !ok {
		t.Errorf("errcode missing or not a string: %s", biShort(r.body))
	}
	if msg, ok := obj["error"].(string); !ok || msg == "" {
		t.Errorf("error missing, empty or not a string: %s", biShort(r.body))
	}
	if code != want.ErrCode {
		t.Errorf("errcode = %q, want %q (body %s)", code, want.ErrCode, biShort(r.body))
	}
	if r.err != nil && want.ErrCode != "M_UNKNOWN" && !errors.Is(r.err, want) {
		t.Errorf("errors.Is(%v, %s) = false", r.err, want.ErrCode)
	}
	return obj
}

func biShort(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// biCase is one row of the bad-input table.
type biCase struct {
	name   string
	server string // biOpen or biSmall
	// A plain request: method and path (placeholders see expand), sent as
	// "as" (see biEnv.client)…
	method string
	path   string
	as     string
	// …through net/http when raw, rawEmpty, header or chunked is set,
	// otherwise through mautrix with body as its JSON.
	raw      []byte
	rawEmpty bool
	header   http.Header
	chunked  bool
	body     any
	// Or a typed client-library call.
	call func(t *testing.T, e *biEnv) error

	want   mautrix.RespError
	status int            // when it differs from want.StatusCode
	extra  map[string]any // keys the error object must also have
	// sameErrorAs names an earlier row whose error message must be
	// identical (a login must not reveal whether the account exists).
	sameErrorAs string
	// after checks a side effect (or its absence).
	after func(t *testing.T, e *biEnv)
}

func biLoginReq(user, password string) *mautrix.ReqLogin {
	return &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:   password,
	}
}

// biPad pads a JSON object with spaces to exactly n bytes.
func biPad(obj string, n int) []byte {
	return []byte(obj[:len(obj)-1] + strings.Repeat(" ", n-len(obj)) + "}")
}

func biTable() []biCase {
	const login = "/_matrix/client/v3/login"
	const register = "/_matrix/client/v3/register"
	aliceLogin := `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"wrong password"}`
	long := strings.Repeat("a", 300)
	return []biCase{
		// --- Malformed bodies (raw bytes) ---
		{name: "login/malformed JSON", server: biSmall, method: "POST", path: login,
			raw: []byte(`{"type": "m.login.password",`), want: mautrix.MNotJSON},
		{name: "login/not JSON at all", server: biSmall, method: "POST", path: login,
			raw: []byte(`type=m.login.password&user=alice`), want: mautrix.MNotJSON},
		{name: "login/empty body", server: biSmall, method: "POST", path: login,
			rawEmpty: true, want: mautrix.MNotJSON},
		{name: "login/JSON array body", server: biSmall, method: "POST", path: login,
			raw: []byte(`[{"type":"m.login.password"}]`), want: mautrix.MBadJSON},
		{name: "login/JSON string body", server: biSmall, method: "POST", path: login,
			raw: []byte(`"m.login.password"`), want: mautrix.MBadJSON},
		{name: "login/JSON null body", server: biSmall, method: "POST", path: login,
			raw: []byte(`null`), want: mautrix.MBadJSON},
		{name: "login/trailing garbage", server: biSmall, method: "POST", path: login,
			raw: []byte(aliceLogin + `}`), want: mautrix.MNotJSON},
		{name: "login/two objects", server: biSmall, method: "POST", path: login,
			raw: []byte(aliceLogin + aliceLogin), want: mautrix.MNotJSON},
		{name: "login/non-UTF-8 outside strings", server: biSmall, method: "POST", path: login,
			raw: []byte("\xff\xfe{\"type\":\"m.login.password\"}"), want: mautrix.MNotJSON},
		// The spec: "All JSON data, in requests or responses, must be
		// encoded using UTF-8."
		{name: "login/non-UTF-8 inside a string", server: biSmall, method: "POST", path: login,
			raw:  []byte("{\"type\":\"m.login.password\",\"identifier\":{\"type\":\"m.id.user\",\"user\":\"alice\"},\"password\":\"\xff\xfe\xfd\"}"),
			want: mautrix.MNotJSON},
		{name: "profile/non-UTF-8 displayname", server: biOpen, method: "PUT", path: "/_matrix/client/v3/profile/{alice}/displayname", as: "alice",
			raw: []byte("{\"displayname\":\"Al\xffice\"}"), want: mautrix.MNotJSON,
			after: func(t *testing.T, e *biEnv) {
				// The refused write left the profile as it was, valid
				// UTF-8 JSON for every other client.
				r := biRaw(t, "GET", e.srv.URL+e.expand("/_matrix/client/v3/profile/{alice}"), nil, nil, false)
				var profile struct {
					DisplayName string `json:"displayname"`
				}
				if r.status != http.StatusOK || !utf8.Valid(r.body) || json.Unmarshal(r.body, &profile) != nil || profile.DisplayName != "alice" {
					t.Errorf("GET profile after the non-UTF-8 write = %d %q, want displayname \"alice\" in UTF-8", r.status, biShort(r.body))
				}
			}},

		// --- Wrong field types (raw bytes) ---
		{name: "login/password is a number", server: biSmall, method: "POST", path: login,
			raw: []byte(`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":12345678}`), want: mautrix.MBadJSON},
		{name: "login/identifier is a string", server: biSmall, method: "POST", path: login,
			raw: []byte(`{"type":"m.login.password","identifier":"alice","password":"x"}`), want: mautrix.MBadJSON},
		{name: "login/type is an object", server: biSmall, method: "POST", path: login,
			raw: []byte(`{"type":{"a":1},"user":"alice","password":"x"}`), want: mautrix.MBadJSON},
		{name: "login/refresh_token is a string", server: biSmall, method: "POST", path: login,
			raw: []byte(`{"type":"m.login.password","user":"alice","password":"x","refresh_token":"yes"}`), want: mautrix.MBadJSON},
		{name: "register/username is a number", server: biOpen, method: "POST", path: register,
			raw: []byte(`{"username":42,"password":"long enough password"}`), want: mautrix.MBadJSON},
		{name: "register/auth is a string", server: biOpen, method: "POST", path: register,
			raw: []byte(`{"username":"carol","password":"long enough password","auth":"m.login.dummy"}`), want: mautrix.MBadJSON},
		{name: "register/inhibit_login is a string", server: biOpen, method: "POST", path: register,
			raw: []byte(`{"username":"carol","password":"long enough password","inhibit_login":"true"}`), want: mautrix.MBadJSON},
		{name: "refresh/refresh_token is a number", server: biOpen, method: "POST", path: "/_matrix/client/v3/refresh",
			raw: []byte(`{"refresh_token":1}`), want: mautrix.MBadJSON},
		{name: "devices/display_name is a number", server: biOpen, method: "PUT", path: "/_matrix/client/v3/devices/{alice_device}", as: "alice",
			raw: []byte(`{"display_name":5}`), want: mautrix.MBadJSON},
		{name: "delete_devices/devices is a string", server: biOpen, method: "POST", path: "/_matrix/client/v3/delete_devices", as: "alice",
			raw: []byte(`{"devices":"ABCDEF"}`), want: mautrix.MBadJSON},
		{name: "password/new_password is a bool", server: biOpen, method: "POST", path: "/_matrix/client/v3/account/password", as: "alice",
			raw: []byte(`{"new_password":true}`), want: mautrix.MBadJSON},
		{name: "deactivate/erase is a string", server: biOpen, method: "POST", path: "/_matrix/client/v3/account/deactivate", as: "alice",
			raw: []byte(`{"erase":"yes"}`), want: mautrix.MBadJSON},
		{name: "profile/displayname is a number", server: biOpen, method: "PUT", path: "/_matrix/client/v3/profile/{alice}/displayname", as: "alice",
			raw: []byte(`{"displayname":5}`), want: mautrix.MBadJSON},
		{name: "admin register/admin is a string", server: biOpen, method: "POST", path: "/_synapse/admin/v1/register",
			raw: []byte(`{"nonce":"n","username":"u","password":"p","mac":"00","admin":"yes"}`), want: mautrix.MBadJSON},

		// --- Body size (http.max_body_bytes = 4096 on biSmall) ---
		{name: "login/oversize body", server: biSmall, method: "POST", path: login,
			raw: biPad(aliceLogin, 2*biSmallBody), want: mautrix.MTooLarge},
		{name: "login/oversize body, chunked", server: biSmall, method: "POST", path: login,
			raw: biPad(aliceLogin, 2*biSmallBody), chunked: true, want: mautrix.MTooLarge},
		{name: "login/body of exactly max_body_bytes is read", server: biSmall, method: "POST", path: login,
			raw: biPad(aliceLogin, biSmallBody), want: mautrix.MForbidden},
		{name: "profile/oversize body", server: biSmall, method: "PUT", path: "/_matrix/client/v3/profile/{alice}/displayname", as: "alice",
			raw: []byte(`{"displayname":"` + strings.Repeat("x", 2*biSmallBody) + `"}`), want: mautrix.MTooLarge},
		{name: "register/oversize body", server: biSmall, method: "POST", path: register,
			raw: biPad(`{"username":"carol"}`, 2*biSmallBody), want: mautrix.MTooLarge},

		// --- Access tokens (the per-endpoint sweep is TestBadInputAuth) ---
		{name: "whoami/token in query, unknown", server: biOpen, method: "GET", path: "/_matrix/client/v3/account/whoami?access_token=sbat_nope",
			header: http.Header{}, want: mautrix.MUnknownToken, extra: map[string]any{"soft_logout": false}},
		{name: "whoami/Bearer without token", server: biOpen, method: "GET", path: "/_matrix/client/v3/account/whoami",
			header: http.Header{"Authorization": {"Bearer"}}, want: mautrix.MMissingToken},

		// --- Registration ---
		{name: "register/disabled", server: biSmall, call: func(t *testing.T, e *biEnv) error {
			_, _, err := e.client(t, "").Register(t.Context(), &mautrix.ReqRegister[any]{Username: "carol", Password: biPassword})
			return err
		}, want: mautrix.MForbidden},
		{name: "register/username with a space", server: biOpen, call: biRegister("Bad Name"), want: mautrix.MInvalidUsername},
		{name: "register/non-ASCII username", server: biOpen, call: biRegister("ü"), want: mautrix.MInvalidUsername},
		{name: "register/300-char username", server: biOpen, call: biRegister(long), want: mautrix.MInvalidUsername},
		{name: "register/username with a colon", server: biOpen, call: biRegister("carol:evil.example"), want: mautrix.MInvalidUsername},
		{name: "register/full user ID as username", server: biOpen, call: biRegister("@carol:localhost"), want: mautrix.MInvalidUsername},
		{name: "register/username taken", server: biOpen, call: biRegister("alice"), want: mautrix.MUserInUse},
		{name: "register/username taken, other case", server: biOpen, call: biRegister("ALICE"), want: mautrix.MUserInUse},
		{name: "register/available, invalid", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			_, err := e.client(t, "").RegisterAvailable(t.Context(), "Bad Name")
			return err
		}, want: mautrix.MInvalidUsername},
		{name: "register/available, taken", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			_, err := e.client(t, "").RegisterAvailable(t.Context(), "alice")
			return err
		}, want: mautrix.MUserInUse},
		{name: "register/available, no username", server: biOpen, method: "GET", path: "/_matrix/client/v3/register/available", want: biMissingParam},
		{name: "register/guest", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			_, _, err := e.client(t, "").RegisterGuest(t.Context(), &mautrix.ReqRegister[any]{})
			return err
		}, want: mautrix.MForbidden},

		// --- Login ---
		{name: "login/wrong password", server: biOpen, call: biLogin(biLoginReq("alice", "not the password")), want: mautrix.MForbidden},
		{name: "login/unknown user", server: biOpen, call: biLogin(biLoginReq("nobody", "not the password")), want: mautrix.MForbidden,
			sameErrorAs: "login/wrong password"},
		{name: "login/300-char user ID", server: biOpen, call: biLogin(biLoginReq("@"+long+":localhost", biPassword)), want: mautrix.MForbidden,
			sameErrorAs: "login/wrong password"},
		{name: "login/300-char localpart", server: biOpen, call: biLogin(biLoginReq(long, biPassword)), want: mautrix.MForbidden,
			sameErrorAs: "login/wrong password"},
		{name: "login/user ID on another server", server: biOpen, call: biLogin(biLoginReq("@alice:evil.example", biPassword)), want: mautrix.MForbidden},
		{name: "login/unknown login type", server: biOpen, call: biLogin(&mautrix.ReqLogin{
			Type: "org.example.bogus", Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: biPassword,
		}), want: biUnknownAt400},
		{name: "login/m.id.thirdparty identifier", server: biOpen, call: biLogin(&mautrix.ReqLogin{
			Type: mautrix.AuthTypePassword, Password: biPassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeThirdParty, Medium: "email", Address: "alice@example.org"},
		}), want: mautrix.MForbidden},
		{name: "login/m.id.phone identifier", server: biOpen, call: biLogin(&mautrix.ReqLogin{
			Type: mautrix.AuthTypePassword, Password: biPassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypePhone, Country: "GB", Phone: "07700900000"},
		}), want: mautrix.MForbidden},
		{name: "login/no identifier", server: biOpen, method: "POST", path: login,
			body: map[string]any{"type": "m.login.password", "password": biPassword}, want: biMissingParam},
		{name: "login/device_id over 255 bytes", server: biOpen, call: biLogin(&mautrix.ReqLogin{
			Type: mautrix.AuthTypePassword, Password: biPassword, DeviceID: id.DeviceID(long),
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		}), want: mautrix.MInvalidParam},
		{name: "refresh/no refresh_token", server: biOpen, method: "POST", path: "/_matrix/client/v3/refresh", body: map[string]any{},
			want: biMissingParam},
		{name: "refresh/unknown refresh token", server: biOpen, method: "POST", path: "/_matrix/client/v3/refresh",
			body: map[string]any{"refresh_token": "sbrt_neverIssued"}, want: mautrix.MUnknownToken, extra: map[string]any{"soft_logout": false}},

		// --- Profile ---
		{name: "profile/field name breaks the grammar", server: biOpen, call: biSetField("Bad.Field", "x"), want: mautrix.MInvalidParam},
		{name: "profile/custom field without namespace", server: biOpen, call: biSetField("nodots", "x"), want: mautrix.MInvalidParam},
		{name: "profile/field name with a slash", server: biOpen, call: biSetField("com.example/x", "x"), want: mautrix.MInvalidParam},
		{name: "profile/key over 255 bytes", server: biOpen, call: biSetField("com.example."+strings.Repeat("k", 250), "x"), want: biKeyTooLarge},
		{name: "profile/avatar_url not mxc", server: biOpen, call: biSetField("avatar_url", "https://example.org/cat.png"), want: mautrix.MBadJSON},
		{name: "profile/avatar_url not a string", server: biOpen, call: biSetField("avatar_url", 42), want: mautrix.MBadJSON},
		{name: "profile/body missing the key", server: biOpen, method: "PUT", path: "/_matrix/client/v3/profile/{alice}/displayname", as: "alice",
			body: map[string]any{"avatar_url": "mxc://localhost/abc"}, want: biMissingParam},
		{name: "profile/empty object", server: biOpen, method: "PUT", path: "/_matrix/client/v3/profile/{alice}/m.tz", as: "alice",
			body: map[string]any{}, want: biMissingParam},
		{name: "profile/another user's profile", server: biOpen, method: "PUT", path: "/_matrix/client/v3/profile/{bob}/displayname", as: "alice",
			body: map[string]any{"displayname": "Bob is mine"}, want: mautrix.MForbidden,
			after: func(t *testing.T, e *biEnv) {
				name, err := e.client(t, "").GetDisplayName(t.Context(), e.bob)
				if err != nil || name.DisplayName != "bob" {
					t.Errorf("bob's displayname = %+v, %v; want unchanged \"bob\"", name, err)
				}
			}},
		{name: "profile/delete another user's field", server: biOpen, method: "DELETE", path: "/_matrix/client/v3/profile/{bob}/displayname", as: "alice",
			want: mautrix.MForbidden},
		{name: "profile/over 64 KiB in one field", server: biOpen, call: biSetField("com.example.big", strings.Repeat("x", 70_000)), want: biProfileTooBig},
		{name: "profile/over 64 KiB in total", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			cli := e.client(t, "alice")
			if err := cli.SetProfileField(t.Context(), "com.example.half", strings.Repeat("y", 40_000)); err != nil {
				t.Fatalf("first 40 kB field: %v", err)
			}
			return cli.SetProfileField(t.Context(), "com.example.other_half", strings.Repeat("z", 40_000))
		}, want: biProfileTooBig, after: func(t *testing.T, e *biEnv) {
			if err := e.client(t, "alice").GetProfileField(t.Context(), e.alice, "com.example.other_half", nil); !errors.Is(err, mautrix.MNotFound) {
				t.Errorf("refused field was stored anyway: %v", err)
			}
		}},
		{name: "profile/unknown user", server: biOpen, method: "GET", path: "/_matrix/client/v3/profile/@nobody:localhost", want: mautrix.MNotFound},
		{name: "profile/not a user ID", server: biOpen, method: "GET", path: "/_matrix/client/v3/profile/nobody", want: mautrix.MInvalidParam},
		{name: "profile/unset field", server: biOpen, method: "GET", path: "/_matrix/client/v3/profile/{alice}/com.example.unset", want: mautrix.MNotFound},

		// --- Unknown endpoints and methods ---
		{name: "unknown endpoint", server: biOpen, method: "GET", path: "/_matrix/client/v3/doesnotexist", want: biUnrecognized},
		{name: "unknown endpoint with token", server: biOpen, method: "POST", path: "/_matrix/client/v3/doesnotexist", as: "alice",
			body: map[string]any{}, want: biUnrecognized},
		{name: "unknown API version", server: biOpen, method: "GET", path: "/_matrix/client/v9/login", want: biUnrecognized},
		{name: "unknown path outside /_matrix", server: biOpen, method: "GET", path: "/doesnotexist", header: http.Header{}, want: biUnrecognized},
		{name: "root path", server: biOpen, method: "GET", path: "/", header: http.Header{}, want: biUnrecognized},
		{name: "wrong method on /login", server: biOpen, method: "DELETE", path: login, want: biMethodNotAllow},
		{name: "wrong method on /login (r0)", server: biOpen, method: "PUT", path: "/_matrix/client/r0/login", body: map[string]any{}, want: biMethodNotAllow},
		{name: "wrong method on /whoami", server: biOpen, method: "POST", path: "/_matrix/client/v3/account/whoami", as: "alice",
			body: map[string]any{}, want: biMethodNotAllow},
		{name: "PATCH on /versions", server: biOpen, method: "PATCH", path: "/_matrix/client/versions", header: http.Header{}, raw: []byte(`{}`),
			want: biMethodNotAllow},
		{name: "trailing slash", server: biOpen, method: "GET", path: "/_matrix/client/v3/login/", want: biUnrecognized},

		// --- Shared-secret registration (Synapse admin API) ---
		{name: "shared secret/bad MAC", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			sa := &synapseadmin.Client{Client: e.client(t, "")}
			_, err := sa.SharedSecretRegister(t.Context(), "this is not the shared secret", synapseadmin.ReqSharedSecretRegister{
				Username: "mallory", Password: biPassword, Admin: true})
			return err
		}, want: mautrix.MForbidden, after: biNoSuchUser("mallory")},
		{name: "shared secret/MAC not hex", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			sa := &synapseadmin.Client{Client: e.client(t, "")}
			nonce, err := sa.GetRegisterNonce(t.Context())
			if err != nil {
				t.Fatalf("nonce: %v", err)
			}
			_, err = e.client(t, "").MakeRequest(t.Context(), "POST", sa.BuildAdminURL("v1", "register"), map[string]any{
				"nonce": nonce, "username": "mallory2", "password": biPassword, "mac": "not hex at all"}, nil)
			return err
		}, want: mautrix.MForbidden, after: biNoSuchUser("mallory2")},
		{name: "shared secret/replayed nonce", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			sa := &synapseadmin.Client{Client: e.client(t, "")}
			nonce, err := sa.GetRegisterNonce(t.Context())
			if err != nil {
				t.Fatalf("nonce: %v", err)
			}
			req := synapseadmin.ReqSharedSecretRegister{Nonce: nonce, Username: "dave", Password: biPassword}
			if _, err := sa.SharedSecretRegister(t.Context(), hstest.SharedSecret, req); err != nil {
				t.Fatalf("first use of the nonce: %v", err)
			}
			req.Username = "eve"
			_, err = sa.SharedSecretRegister(t.Context(), hstest.SharedSecret, req)
			return err
		}, want: mautrix.MForbidden, after: biNoSuchUser("eve")},
		{name: "shared secret/unknown nonce", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			sa := &synapseadmin.Client{Client: e.client(t, "")}
			_, err := sa.SharedSecretRegister(t.Context(), hstest.SharedSecret, synapseadmin.ReqSharedSecretRegister{
				Nonce: "made-up-nonce", Username: "frank", Password: biPassword})
			return err
		}, want: mautrix.MForbidden, after: biNoSuchUser("frank")},
		{name: "shared secret/missing password and mac", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			sa := &synapseadmin.Client{Client: e.client(t, "")}
			nonce, err := sa.GetRegisterNonce(t.Context())
			if err != nil {
				t.Fatalf("nonce: %v", err)
			}
			_, err = e.client(t, "").MakeRequest(t.Context(), "POST", sa.BuildAdminURL("v1", "register"),
				map[string]any{"nonce": nonce, "username": "grace"}, nil)
			return err
		}, want: biMissingParam, after: biNoSuchUser("grace")},
		{name: "shared secret/missing nonce", server: biOpen, method: "POST", path: "/_synapse/admin/v1/register",
			body: map[string]any{"username": "grace", "password": biPassword, "mac": "00"}, want: biMissingParam},
		{name: "shared secret/empty object", server: biOpen, method: "POST", path: "/_synapse/admin/v1/register",
			body: map[string]any{}, want: biMissingParam},
		{name: "shared secret/bad user_type", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			sa := &synapseadmin.Client{Client: e.client(t, "")}
			_, err := sa.SharedSecretRegister(t.Context(), hstest.SharedSecret, synapseadmin.ReqSharedSecretRegister{
				Username: "heidi", Password: biPassword, UserType: "superuser"})
			return err
		}, want: mautrix.MInvalidParam, after: biNoSuchUser("heidi")},
		{name: "shared secret/invalid username", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			sa := &synapseadmin.Client{Client: e.client(t, "")}
			_, err := sa.SharedSecretRegister(t.Context(), hstest.SharedSecret, synapseadmin.ReqSharedSecretRegister{
				Username: "Bad Name", Password: biPassword})
			return err
		}, want: mautrix.MInvalidUsername},
		{name: "shared secret/username taken", server: biOpen, call: func(t *testing.T, e *biEnv) error {
			sa := &synapseadmin.Client{Client: e.client(t, "")}
			_, err := sa.SharedSecretRegister(t.Context(), hstest.SharedSecret, synapseadmin.ReqSharedSecretRegister{
				Username: "alice", Password: biPassword, Admin: true})
			return err
		}, want: mautrix.MUserInUse},

		// --- Admin API as a non-admin ---
		{name: "admin API as non-admin", server: biOpen, method: "GET", path: "/_synapse/admin/v1/registration_tokens", as: "alice",
			want: mautrix.MForbidden},
		{name: "admin API/new token, bad uses_allowed", server: biOpen, method: "POST", path: "/_synapse/admin/v1/registration_tokens/new", as: "admin",
			body: map[string]any{"uses_allowed": -1}, want: mautrix.MInvalidParam},
	}
}

func biRegister(username string) func(t *testing.T, e *biEnv) error {
	return func(t *testing.T, e *biEnv) error {
		_, _, err := e.client(t, "").Register(t.Context(), &mautrix.ReqRegister[any]{Username: username, Password: biPassword})
		return err
	}
}

func biLogin(req *mautrix.ReqLogin) func(t *testing.T, e *biEnv) error {
	return func(t *testing.T, e *biEnv) error {
		_, err := e.client(t, "").Login(t.Context(), req)
		return err
	}
}

func biSetField(key string, value any) func(t *testing.T, e *biEnv) error {
	return func(t *testing.T, e *biEnv) error {
		return e.client(t, "alice").SetProfileField(t.Context(), key, value)
	}
}

func biNoSuchUser(name string) func(t *testing.T, e *biEnv) {
	return func(t *testing.T, e *biEnv) {
		if _, err := e.client(t, "").RegisterAvailable(t.Context(), name); err != nil {
			t.Errorf("a refused registration created %s: %v", name, err)
		}
	}
}

// run sends the row's request and checks the answer.
func (c biCase) run(t *testing.T, e *biEnv) {
	var r biResp
	switch {
	case c.call != nil:
		r = biFromMautrix(t, c.call(t, e), nil)
	case c.raw != nil || c.rawEmpty || c.header != nil || c.chunked:
		h := c.header.Clone()
		if h == nil {
			h = http.Header{}
		}
		if tok := e.token(c.as); tok != "" {
			h.Set("Authorization", "Bearer "+tok)
		}
		body := c.raw
		if c.rawEmpty {
			body = []byte{}
		}
		r = biRaw(t, c.method, e.srv.URL+e.expand(c.path), h, body, c.chunked)
	default:
		cli := e.client(t, c.as)
		data, _, err := cli.MakeFullRequestWithResp(t.Context(), mautrix.FullRequest{
			Method: c.method, URL: e.srv.URL + e.expand(c.path), RequestJSON: c.body, MaxAttempts: 1,
		})
		r = biFromMautrix(t, err, data)
	}
	obj := biCheckError(t, r, c.want, c.status)
	for k, v := range c.extra {
		if got, ok := obj[k]; !ok || got != v {
			t.Errorf("%s = %#v (present %v), want %#v", k, got, ok, v)
		}
	}
	msg, _ := obj["error"].(string)
	e.messagesSeen[c.name] = msg
	if c.sameErrorAs != "" {
		if prev, ok := e.messagesSeen[c.sameErrorAs]; !ok {
			t.Logf("row %q did not run before this one (-run filter?): message not compared", c.sameErrorAs)
		} else if prev != msg {
			t.Errorf("error %q differs from %q's %q: it tells attackers which accounts exist", msg, c.sameErrorAs, prev)
		}
	}
	if c.after != nil {
		c.after(t, e)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	table := biTable()
	for _, profile := range []string{biOpen, biSmall} {
		t.Run(profile, func(t *testing.T) {
			testdb.ForEach(t, func(t *testing.T, uri string) {
				e := biSetup(t, uri, biProfiles[profile])
				n := 0
				for _, c := range table {
					if c.server != profile {
						continue
					}
					n++
					t.Run(c.name, func(t *testing.T) { c.run(t, e) })
				}
				if n == 0 {
					t.Fatalf("no rows for server profile %q", profile)
				}
				// The server survived all of it.
				if _, err := e.client(t, "alice").Whoami(t.Context()); err != nil {
					t.Errorf("whoami after the table: %v", err)
				}
			})
		})
	}
}

// biPublicRoutes are the endpoints that work without an access token;
// every other client-server and admin endpoint must refuse a request
// without a valid one.
var biPublicRoutes = map[string]bool{
	"GET /_matrix/client/versions":                                        true,
	"GET /.well-known/matrix/client":                                      true,
	"GET /.well-known/matrix/server":                                      true,
	"GET /_matrix/client/v1/register/m.login.registration_token/validity": true,
	"POST /_matrix/client/{v}/register":                                   true,
	"GET /_matrix/client/{v}/register/available":                          true,
	"GET /_matrix/client/{v}/login":                                       true,
	"POST /_matrix/client/{v}/login":                                      true,
	"POST /_matrix/client/{v}/refresh":                                    true,
	"GET /_matrix/client/{v}/profile/:userID":                             true,
	"GET /_matrix/client/{v}/profile/:userID/:field":                      true,
	"GET /_synapse/admin/v1/register":                                     true,
	"GET /_matrix/client/{v}/directory/room/:alias":                       true,
	"GET /_matrix/client/{v}/publicRooms":                                 true,
	"GET /_matrix/client/{v}/directory/list/room/:roomID":                 true,
	"POST /_synapse/admin/v1/register":                                    true,
}

// biRouteKey normalises the client API version so one entry covers v3 and r0.
func biRouteKey(method, path string) string {
	for _, v := range []string{"/_matrix/client/v3/", "/_matrix/client/r0/"} {
		if strings.HasPrefix(path, v) {
			path = "/_matrix/client/{v}/" + strings.TrimPrefix(path, v)
		}
	}
	return method + " " + path
}

// biFillParams replaces gin's :params with the given values ("x" when absent).
func biFillParams(path string, values map[string]string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, ":") || strings.HasPrefix(p, "*") {
			v, ok := values[p[1:]]
			if !ok {
				v = "x"
			}
			parts[i] = url.PathEscape(v)
		}
	}
	return strings.Join(parts, "/")
}

func biRoutes(t *testing.T, e *biEnv) gin.RoutesInfo {
	t.Helper()
	engine, ok := e.srv.HS.Handler().(*gin.Engine)
	if !ok {
		t.Fatalf("homeserver handler is %T, not *gin.Engine", e.srv.HS.Handler())
	}
	return engine.Routes()
}

// TestBadInputAuth sends every authenticated endpoint a request without a
// token, with a token the server never issued, and with a valid token in
// the wrong Authorization scheme.
func TestBadInputAuth(t *testing.T) {
	t.Parallel()
	testdb.ForEach(t, func(t *testing.T, uri string) {
		e := biSetup(t, uri, biProfiles[biOpen])
		params := map[string]string{"userID": string(e.alice), "field": "displayname", "deviceID": string(e.aliceDevice), "token": "abcd"}
		var authed []string
		for _, rt := range biRoutes(t, e) {
			if !strings.HasPrefix(rt.Path, "/_matrix/client/") && !strings.HasPrefix(rt.Path, "/_synapse/admin/") {
				continue
			}
			if biPublicRoutes[biRouteKey(rt.Method, rt.Path)] {
				continue
			}
			authed = append(authed, rt.Method+" "+rt.Path)
			path := biFillParams(rt.Path, params)
			var body any
			if rt.Method == "POST" || rt.Method == "PUT" {
				body = map[string]any{}
			}
			name := strings.ReplaceAll(rt.Method+" "+rt.Path, "/", "_")
			t.Run(name, func(t *testing.T) {
				for _, who := range []string{"", "bad"} {
					cli := e.client(t, who)
					data, _, err := cli.MakeFullRequestWithResp(t.Context(), mautrix.FullRequest{
						Method: rt.Method, URL: e.srv.URL + path, RequestJSON: body, MaxAttempts: 1,
					})
					if who == "" {
						biCheckError(t, biFromMautrix(t, err, data), mautrix.MMissingToken, 0)
					} else {
						obj := biCheckError(t, biFromMautrix(t, err, data), mautrix.MUnknownToken, 0)
						if obj["soft_logout"] != false {
							t.Errorf("soft_logout = %#v for a token that never existed, want false", obj["soft_logout"])
						}
					}
				}
				// A valid token in a scheme other than Bearer is no token.
				for _, scheme := range []string{"Basic ", "Token ", "Bearer", "bearer:"} {
					var raw []byte
					if body != nil {
						raw = []byte(`{}`)
					}
					r := biRaw(t, rt.Method, e.srv.URL+path, http.Header{"Authorization": {scheme + e.aliceToken}}, raw, false)
					biCheckError(t, r, mautrix.MMissingToken, 0)
				}
			})
		}
		for _, must := range []string{"GET /_matrix/client/v3/account/whoami", "PUT /_matrix/client/v3/profile/:userID/:field",
			"POST /_matrix/client/r0/logout", "DELETE /_synapse/admin/v1/registration_tokens/:token"} {
			if !slices.Contains(authed, must) {
				t.Errorf("%s was not among the authenticated routes checked: %v", must, authed)
			}
		}
		// Nothing above logged anyone out.
		if _, err := e.client(t, "alice").Whoami(t.Context()); err != nil {
			t.Errorf("whoami after the sweep: %v", err)
		}
	})
}

// TestBadInputCORS checks preflights: the spec's recommended headers, and no
// endpoint logic.
func TestBadInputCORS(t *testing.T) {
	t.Parallel()
	testdb.ForEach(t, func(t *testing.T, uri string) {
		e := biSetup(t, uri, biProfiles[biOpen])
		paths := []string{
			"/_matrix/client/versions",
			"/_matrix/client/v3/login",
			"/_matrix/client/v3/logout",
			"/_matrix/client/v3/account/whoami",
			"/_matrix/client/v3/account/deactivate",
			"/_matrix/client/r0/register",
			"/_matrix/client/v3/profile/" + url.PathEscape(string(e.alice)) + "/displayname",
			"/_matrix/client/v3/devices/" + string(e.aliceDevice),
			"/_synapse/admin/v1/register",
			"/_matrix/client/v3/doesnotexist",
			"/doesnotexist",
		}
		for _, p := range paths {
			t.Run(strings.ReplaceAll(p, "/", "_"), func(t *testing.T) {
				for _, auth := range []bool{false, true} {
					h := http.Header{
						"Origin":                         {"https://app.element.io"},
						"Access-Control-Request-Method":  {"POST"},
						"Access-Control-Request-Headers": {"authorization, content-type"},
					}
					if auth {
						h.Set("Authorization", "Bearer "+e.aliceToken)
					}
					r := biRaw(t, "OPTIONS", e.srv.URL+p, h, nil, false)
					if r.status != http.StatusOK {
						t.Errorf("OPTIONS %s: status %d, want 200 (body %s)", p, r.status, biShort(r.body))
					}
					biCheckCORS(t, r.header)
				}
			})
		}
		// OPTIONS runs no endpoint logic: these would log out, delete the
		// device and rename alice if they did.
		h := http.Header{"Authorization": {"Bearer " + e.aliceToken}, "Content-Type": {"application/json"}}
		biRaw(t, "OPTIONS", e.srv.URL+"/_matrix/client/v3/logout", h, nil, false)
		biRaw(t, "OPTIONS", e.srv.URL+"/_matrix/client/v3/logout/all", h, nil, false)
		biRaw(t, "OPTIONS", e.srv.URL+"/_matrix/client/v3/profile/"+url.PathEscape(string(e.alice))+"/displayname", h, []byte(`{"displayname":"Preflighted"}`), false)
		biRaw(t, "OPTIONS", e.srv.URL+"/_matrix/client/v3/register", http.Header{}, []byte(`{"username":"preflight","password":"long enough password","auth":{"type":"m.login.dummy"}}`), false)
		alice := e.client(t, "alice")
		if who, err := alice.Whoami(t.Context()); err != nil || who.DeviceID != e.aliceDevice {
			t.Fatalf("after OPTIONS /logout: whoami = %+v, %v; the preflight logged the device out", who, err)
		}
		if name, err := alice.GetOwnDisplayName(t.Context()); err != nil || name.DisplayName != "alice" {
			t.Errorf("after OPTIONS on the profile: displayname = %+v, %v", name, err)
		}
		if _, err := alice.RegisterAvailable(t.Context(), "preflight"); err != nil {
			t.Errorf("OPTIONS /register registered a user: %v", err)
		}

		// Ordinary responses carry the CORS headers too, success and error.
		_, resp, err := alice.MakeFullRequestWithResp(t.Context(), mautrix.FullRequest{
			Method: "GET", URL: alice.BuildClientURL("v3", "account", "whoami"), MaxAttempts: 1})
		if err != nil {
			t.Fatalf("whoami: %v", err)
		}
		biCheckCORS(t, resp.Header)
		_, err = e.client(t, "").Whoami(t.Context())
		biCheckCORS(t, biFromMautrix(t, err, nil).header)
	})
}

func biCheckCORS(t *testing.T, h http.Header) {
	t.Helper()
	if got := h.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "*" {
		t.Errorf("Access-Control-Allow-Origin = %q, want exactly \"*\"", got)
	}
	biCheckList(t, h, "Access-Control-Allow-Methods", "GET", "POST", "PUT", "DELETE", "OPTIONS")
	biCheckList(t, h, "Access-Control-Allow-Headers", "X-Requested-With", "Content-Type", "Authorization")
}

func biCheckList(t *testing.T, h http.Header, key string, want ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, v := range h.Values(key) {
		for _, item := range strings.Split(v, ",") {
			have[strings.ToLower(strings.TrimSpace(item))] = true
		}
	}
	for _, w := range want {
		if !have[strings.ToLower(w)] {
			t.Errorf("%s = %q, lacks %s", key, h.Values(key), w)
		}
	}
}

// TestBadInputSoftLogout lets a refreshable access token expire: the server
// must say M_UNKNOWN_TOKEN with soft_logout true, so the client refreshes
// instead of throwing the session (and its encryption keys) away.
func TestBadInputSoftLogout(t *testing.T) {
	t.Parallel()
	testdb.ForEach(t, func(t *testing.T, uri string) {
		t.Parallel()                      // both dialects wait at the same time
		const lifetime = 10 * time.Second // the shortest the config allows
		e := biSetup(t, uri, func(c *config.Config) { c.Auth.AccessTokenLifetime = config.Duration(lifetime) })
		cli := e.client(t, "")
		resp, err := cli.Login(t.Context(), &mautrix.ReqLogin{
			Type:         mautrix.AuthTypePassword,
			Identifier:   mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
			Password:     biPassword,
			RefreshToken: true,
		})
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		if resp.RefreshToken == "" || resp.ExpiresInMS <= 0 || resp.ExpiresInMS > lifetime.Milliseconds() {
			t.Fatalf("login response lacks refresh_token/expires_in_ms: %+v", resp)
		}
		expired, err := mautrix.NewClient(e.srv.URL, resp.UserID, resp.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := expired.Whoami(t.Context()); err != nil {
			t.Fatalf("whoami with the fresh token: %v", err)
		}
		time.Sleep(time.Duration(resp.ExpiresInMS)*time.Millisecond + time.Second)
		_, err = expired.Whoami(t.Context())
		obj := biCheckError(t, biFromMautrix(t, err, nil), mautrix.MUnknownToken, 0)
		if obj["soft_logout"] != true {
			t.Errorf("soft_logout = %#v for an expired token, want true", obj["soft_logout"])
		}
		// The soft-logged-out client recovers with its refresh token.
		var refreshed mautrix.RespLogin
		if _, err := cli.MakeRequest(t.Context(), "POST", cli.BuildClientURL("v3", "refresh"),
			map[string]string{"refresh_token": resp.RefreshToken}, &refreshed); err != nil {
			t.Fatalf("refresh: %v", err)
		}
		expired.AccessToken = refreshed.AccessToken
		if who, err := expired.Whoami(t.Context()); err != nil || who.DeviceID != resp.DeviceID {
			t.Fatalf("whoami after refresh = %+v, %v (want the same device %s)", who, err, resp.DeviceID)
		}
		// An unknown token still says soft_logout false.
		_, err = e.client(t, "bad").Whoami(t.Context())
		if obj := biCheckError(t, biFromMautrix(t, err, nil), mautrix.MUnknownToken, 0); obj["soft_logout"] != false {
			t.Errorf("soft_logout = %#v for an unknown token, want false", obj["soft_logout"])
		}
	})
}

// biKnownKeys are request keys the endpoints read: the fuzzer gives them
// values of every wrong type.
var biKnownKeys = []string{
	"type", "identifier", "user", "medium", "address", "password", "device_id", "initial_device_display_name",
	"refresh_token", "username", "inhibit_login", "auth", "session", "token", "new_password", "logout_devices",
	"erase", "devices", "display_name", "displayname", "avatar_url", "m.tz", "nonce", "mac", "admin",
	"user_type", "uses_allowed", "expiry_time", "length", "valid",
}

// biJSONValue writes a random JSON value (sometimes with invalid UTF-8 or
// NUL characters in strings) of at most the given depth.
func biJSONValue(r *rand.Rand, depth int) string {
	switch k := r.IntN(12); {
	case k == 0:
		return "null"
	case k == 1:
		return strconv.FormatBool(r.IntN(2) == 0)
	case k == 2:
		return []string{"0", "-1", "1e400", "-9223372036854775809", "18446744073709551616", "3.14", "1e-400", "-0"}[r.IntN(8)]
	case k == 3:
		return `"` + []string{"", `\u0000`, "\xff\xfe", `\ud800`, strings.Repeat("a", 300), "m.login.password",
			"m.login.dummy", "m.id.user", "@root:localhost", "root", "mxc://", "../../etc", `\"`, "💥"}[r.IntN(14)] + `"`
	case k <= 6 && depth > 0:
		n := r.IntN(4)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = biJSONValue(r, depth-1)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case depth > 0:
		return biJSONObject(r, depth-1)
	default:
		return strconv.Itoa(r.IntN(1000))
	}
}

func biJSONObject(r *rand.Rand, depth int) string {
	n := 1 + r.IntN(5)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = strconv.Quote(biKnownKeys[r.IntN(len(biKnownKeys))]) + ":" + biJSONValue(r, depth)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// biGarbage returns n bodies: fixed nasty ones, then random ones.
func biGarbage(r *rand.Rand, n int) [][]byte {
	out := [][]byte{
		{}, []byte("{"), []byte("}"), []byte("[]"), []byte("null"), []byte("0"), []byte(`"x"`),
		[]byte(strings.Repeat("[", 100_000)), []byte(strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)),
		[]byte("\x00\x01\x02"), []byte("{\"auth\":{\"type\":\"m.login.password\",\"identifier\":5}}"),
		[]byte(`{"auth":{"session":"` + strings.Repeat("s", 10_000) + `","type":"m.login.dummy"}}`),
		[]byte(`{"devices":[` + strings.Repeat(`"X",`, 1000) + `"X"]}`),
	}
	for len(out) < n {
		switch r.IntN(3) {
		case 0: // random bytes
			b := make([]byte, r.IntN(256))
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			out = append(out, b)
		case 1: // a plausible object with wrong-typed values
			out = append(out, []byte(biJSONObject(r, 3)))
		default: // a plausible object, truncated or with a byte flipped
			b := []byte(biJSONObject(r, 2))
			if r.IntN(2) == 0 {
				b = b[:r.IntN(len(b))]
			} else {
				b[r.IntN(len(b))] = byte(r.IntN(256))
			}
			out = append(out, b)
		}
	}
	return out
}

// biCheckNoServerError: whatever the request, the answer is a JSON object,
// below 500, and an error is the standard error response (a UIA challenge
// is the one 401 that may come without errcode).
func biCheckNoServerError(t *testing.T, what string, r biResp) {
	t.Helper()
	if r.status >= 500 {
		t.Errorf("%s: HTTP %d: %s", what, r.status, biShort(r.body))
		return
	}
	var obj map[string]any
	if err := json.Unmarshal(r.body, &obj); err != nil || obj == nil {
		t.Errorf("%s: HTTP %d, body is not a JSON object (%v): %s", what, r.status, err, biShort(r.body))
		return
	}
	if !utf8.Valid(r.body) {
		t.Errorf("%s: response is not UTF-8: %q", what, biShort(r.body))
	}
	if r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("%s: no CORS header", what)
	}
	if r.status < 400 {
		return
	}
	if _, uia := obj["flows"]; uia && r.status == http.StatusUnauthorized {
		return
	}
	code, ok1 := obj["errcode"].(string)
	_, ok2 := obj["error"].(string)
	if !ok1 || !ok2 || !strings.HasPrefix(code, "M_") {
		t.Errorf("%s: HTTP %d without a standard error: %s", what, r.status, biShort(r.body))
	}
}

// TestBadInputFuzz throws garbage at every endpoint that takes a body,
// garbage path parameters and query strings at every endpoint, and strings
// PostgreSQL cannot store (NUL) at the fields that end up in the database:
// nothing may panic or answer 5xx. It runs with open and with token
// registration, which validate different things.
func TestBadInputFuzz(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{config.RegistrationOpen, config.RegistrationToken} {
		t.Run(mode, func(t *testing.T) {
			testdb.ForEach(t, func(t *testing.T, uri string) {
				e := biSetup(t, uri, func(c *config.Config) { c.Registration.Mode = mode })
				biFuzz(t, e)
			})
		})
	}
}

func biFuzz(t *testing.T, e *biEnv) {
	const seed = 20240611
	r := rand.New(rand.NewPCG(seed, seed))
	t.Logf("fuzz seed %d", seed)
	params := map[string]string{"userID": string(e.adminUserID), "field": "com.example.fuzz", "deviceID": string(e.adminDevice), "token": "fuzztoken"}
	routes := biRoutes(t, e)
	auth := http.Header{"Authorization": {"Bearer " + e.adminToken}}
	// Logout takes no body by spec and would end the session.
	skip := func(path string) bool {
		return strings.HasSuffix(path, "/logout") || strings.HasSuffix(path, "/logout/all")
	}

	bodyRoutes := 0
	for _, rt := range routes {
		if rt.Method != "POST" && rt.Method != "PUT" && rt.Method != "DELETE" || skip(rt.Path) {
			continue
		}
		bodyRoutes++
		path := biFillParams(rt.Path, params)
		t.Run("body "+strings.ReplaceAll(rt.Method+" "+rt.Path, "/", "_"), func(t *testing.T) {
			for i, body := range biGarbage(r, 24) {
				res := biRaw(t, rt.Method, e.srv.URL+path, auth, body, i%5 == 4)
				biCheckNoServerError(t, fmt.Sprintf("body #%d %q", i, biShort(body)), res)
			}
		})
	}
	if bodyRoutes < 10 {
		t.Errorf("only %d POST/PUT/DELETE routes found", bodyRoutes)
	}

	bad := []string{"\xff\xfe", "\x00", "a\x00b", strings.Repeat("p", 1000), "@\xff:localhost", "@a\x00:localhost",
		"@" + strings.Repeat("a", 300) + ":localhost", "@root:localhost:8448:extra", "..", "%", " ", "💥"}
	for _, rt := range routes {
		if skip(rt.Path) {
			continue
		}
		var body []byte
		if rt.Method == "POST" || rt.Method == "PUT" {
			body = []byte(`{"display_name":"x","com.example.fuzz":1,"displayname":"x"}`)
		}
		t.Run("params "+strings.ReplaceAll(rt.Method+" "+rt.Path, "/", "_"), func(t *testing.T) {
			for _, p := range bad {
				if strings.Contains(rt.Path, "/:") {
					values := map[string]string{}
					for k := range params {
						values[k] = p
					}
					path := biFillParams(rt.Path, values)
					res := biRaw(t, rt.Method, e.srv.URL+path, auth, body, false)
					biCheckNoServerError(t, fmt.Sprintf("%s %s", rt.Method, path), res)
				}
				q := url.Values{}
				for _, k := range []string{"username", "token", "valid", "kind", "user_id", "field"} {
					q.Set(k, p)
				}
				path := biFillParams(rt.Path, params) + "?" + q.Encode()
				res := biRaw(t, rt.Method, e.srv.URL+path, auth, body, false)
				biCheckNoServerError(t, fmt.Sprintf("%s %s", rt.Method, path), res)
			}
		})
	}

	// Valid JSON and UTF-8, but strings PostgreSQL's text type cannot hold
	// (NUL), in every field that is stored. Accepting them is fine if the
	// value round-trips; otherwise the answer is a 4xx standard error.
	t.Run("NUL in stored strings", func(t *testing.T) {
		const nul = "a\x00b"
		dev := url.PathEscape(string(e.aliceDevice))
		cases := []struct {
			method, path, as string
			body             map[string]any
		}{
			{"POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "password": biPassword,
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "device_id": "DEV" + nul}},
			{"POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "password": biPassword,
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "initial_device_display_name": nul}},
			{"POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "password": nul,
				"identifier": map[string]any{"type": "m.id.user", "user": "alice" + nul}}},
			{"PUT", "/_matrix/client/v3/devices/" + dev, "alice", map[string]any{"display_name": nul}},
			{"PUT", "/_matrix/client/v3/profile/{alice}/displayname", "alice", map[string]any{"displayname": nul}},
			{"PUT", "/_matrix/client/v3/profile/{alice}/m.tz", "alice", map[string]any{"m.tz": nul}},
			{"PUT", "/_matrix/client/v3/profile/{alice}/com.example.nul", "alice", map[string]any{"com.example.nul": map[string]any{nul: nul}}},
			{"POST", "/_matrix/client/v3/register", "", map[string]any{"username": "nul" + nul, "password": biPassword, "auth": map[string]any{"type": "m.login.dummy"}}},
			{"POST", "/_matrix/client/v3/register", "", map[string]any{"username": "nuldevice", "password": biPassword, "device_id": nul,
				"initial_device_display_name": nul, "auth": map[string]any{"type": "m.login.dummy"}}},
			{"POST", "/_matrix/client/v3/register", "", map[string]any{"password": biPassword,
				"auth": map[string]any{"type": "m.login.dummy", "session": nul}}},
			{"POST", "/_matrix/client/v3/register", "", map[string]any{"password": biPassword,
				"auth": map[string]any{"type": "m.login.registration_token", "token": nul}}},
			{"POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": nul}},
			{"POST", "/_synapse/admin/v1/register", "", map[string]any{"nonce": nul, "username": "x", "password": biPassword, "mac": "00"}},
			{"POST", "/_synapse/admin/v1/registration_tokens/new", "admin", map[string]any{"token": nul}},
			{"POST", "/_matrix/client/v3/delete_devices", "alice", map[string]any{"devices": []string{nul},
				"auth": map[string]any{"type": "m.login.password", "password": nul, "identifier": map[string]any{"type": "m.id.user", "user": nul}}}},
			{"POST", "/_matrix/client/v3/delete_devices", "alice", map[string]any{"devices": []string{"X"},
				"auth": map[string]any{"type": "m.login.password", "session": nul}}},
			{"POST", "/_matrix/client/v3/delete_devices", "alice", map[string]any{"devices": []string{nul},
				"auth": map[string]any{"type": "m.login.password", "password": biPassword, "identifier": map[string]any{"type": "m.id.user", "user": "alice"}}}},
		}
		for _, c := range cases {
			cli := e.client(t, c.as)
			data, resp, err := cli.MakeFullRequestWithResp(t.Context(), mautrix.FullRequest{
				Method: c.method, URL: e.srv.URL + e.expand(c.path), RequestJSON: c.body, MaxAttempts: 1,
			})
			what := fmt.Sprintf("%s %s %q", c.method, c.path, c.body)
			if resp == nil {
				t.Errorf("%s: no response: %v", what, err)
				continue
			}
			biCheckNoServerError(t, what, biResp{status: resp.StatusCode, header: resp.Header, body: data})
		}
		// Whatever was accepted reads back as valid JSON.
		for _, p := range []string{"/_matrix/client/v3/profile/{alice}", "/_matrix/client/v3/devices"} {
			r := biRaw(t, "GET", e.srv.URL+e.expand(p), http.Header{"Authorization": {"Bearer " + e.aliceToken}}, nil, false)
			if r.status != http.StatusOK || !json.Valid(r.body) {
				t.Errorf("GET %s = %d %s", p, r.status, biShort(r.body))
			}
		}
	})

	// The admin session survived the storm (nothing above logged it out or
	// broke the server).
	if _, err := e.client(t, "admin").Whoami(t.Context()); err != nil {
		t.Errorf("whoami after fuzzing: %v", err)
	}
}
