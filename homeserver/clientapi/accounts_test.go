package clientapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

const pw = "correct horse battery staple"

var ctx = context.Background()

func openRegistration(c *config.Config)  { c.Registration.Mode = config.RegistrationOpen }
func tokenRegistration(c *config.Config) { c.Registration.Mode = config.RegistrationToken }

func mustErr(t *testing.T, err error, want mautrix.RespError, status int) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("want %s, got %v", want.ErrCode, err)
	}
	var httpErr mautrix.HTTPError
	if status != 0 && errors.As(err, &httpErr) && httpErr.Response.StatusCode != status {
		t.Fatalf("want HTTP %d for %s, got %d", status, want.ErrCode, httpErr.Response.StatusCode)
	}
}

func TestRegisterOpenDummy(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, openRegistration)
		cli := srv.Client()
		resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "Alice", Password: pw, InitialDeviceDisplayName: "Laptop"})
		if err != nil {
			t.Fatalf("register: %v", err)
		}
		// Usernames are lowercased onto the localpart grammar.
		if resp.UserID != "@alice:localhost" || resp.AccessToken == "" || resp.DeviceID == "" {
			t.Fatalf("unexpected register response: %+v", resp)
		}
		cli.SetCredentials(resp.UserID, resp.AccessToken)
		who, err := cli.Whoami(ctx)
		if err != nil || who.UserID != resp.UserID || who.DeviceID != resp.DeviceID {
			t.Fatalf("whoami = %+v, %v", who, err)
		}
		dev, err := cli.GetDeviceInfo(ctx, resp.DeviceID)
		if err != nil || dev.DisplayName != "Laptop" {
			t.Fatalf("device = %+v, %v", dev, err)
		}
		// The initial display name is the localpart.
		name, err := cli.GetOwnDisplayName(ctx)
		if err != nil || name.DisplayName != "alice" {
			t.Fatalf("displayname = %+v, %v", name, err)
		}

		// Taken and invalid names are refused before any UIA.
		_, _, err = srv.Client().Register(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: pw})
		mustErr(t, err, mautrix.MUserInUse, http.StatusBadRequest)
		_, _, err = srv.Client().Register(ctx, &mautrix.ReqRegister[any]{Username: "al ice", Password: pw})
		mustErr(t, err, mautrix.MInvalidUsername, http.StatusBadRequest)
		avail, err := srv.Client().RegisterAvailable(ctx, "bob")
		if err != nil || !avail.Available {
			t.Fatalf("bob available = %+v, %v", avail, err)
		}
		_, err = srv.Client().RegisterAvailable(ctx, "alice")
		mustErr(t, err, mautrix.MUserInUse, http.StatusBadRequest)

		// Without a username the server picks one.
		gen, err := srv.Client().RegisterDummy(ctx, &mautrix.ReqRegister[any]{Password: pw, InhibitLogin: true})
		if err != nil || gen.UserID.Homeserver() != "localhost" || gen.AccessToken != "" {
			t.Fatalf("generated registration = %+v, %v", gen, err)
		}

		// A weak password is refused.
		_, _, err = srv.Client().Register(ctx, &mautrix.ReqRegister[any]{Username: "weak", Password: "short"})
		if err == nil || !errors.Is(err, mautrix.RespError{ErrCode: "M_WEAK_PASSWORD"}) {
			t.Fatalf("weak password: %v", err)
		}
		// Guests are not offered.
		_, _, err = srv.Client().RegisterGuest(ctx, &mautrix.ReqRegister[any]{})
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
	})
}

func TestRegisterClosedByDefault(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	_, err := srv.Client().RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "mallory", Password: pw})
	mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
}

func TestRegisterWithToken(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, tokenRegistration)
		srv.CreateUser("root", pw, true)
		admin := srv.Login("root", pw)

		// An admin creates a two-use token through the Synapse-compatible API.
		var tok struct {
			Token       string `json:"token"`
			UsesAllowed *int64 `json:"uses_allowed"`
			Pending     int64  `json:"pending"`
			Completed   int64  `json:"completed"`
		}
		_, err := admin.MakeRequest(ctx, http.MethodPost, admin.BuildURL(mautrix.SynapseAdminURLPath{"v1", "registration_tokens", "new"}),
			map[string]any{"uses_allowed": 2}, &tok)
		if err != nil || len(tok.Token) != 16 || tok.UsesAllowed == nil || *tok.UsesAllowed != 2 {
			t.Fatalf("new token = %+v, %v", tok, err)
		}
		// Non-admins may not.
		plain := srv.NewUser("plain")
		_, err = plain.MakeRequest(ctx, http.MethodGet, plain.BuildURL(mautrix.SynapseAdminURLPath{"v1", "registration_tokens"}), nil, nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)

		validity := func(token string) bool {
			var v struct {
				Valid bool `json:"valid"`
			}
			u := srv.Client().BuildURLWithQuery(mautrix.ClientURLPath{"v1", "register", "m.login.registration_token", "validity"}, map[string]string{"token": token})
			if _, err := srv.Client().MakeRequest(ctx, http.MethodGet, u, nil, &v); err != nil {
				t.Fatalf("validity: %v", err)
			}
			return v.Valid
		}
		if !validity(tok.Token) || validity("nope") {
			t.Fatal("validity endpoint gives wrong answers")
		}

		register := func(name, token string) (*mautrix.RespRegister, error) {
			cli := srv.Client()
			req := &mautrix.ReqRegister[any]{Username: name, Password: pw}
			_, uia, err := cli.Register(ctx, req)
			if uia == nil {
				t.Fatalf("expected UIA challenge, got %v", err)
			}
			if !uia.HasSingleStageFlow(mautrix.AuthType("m.login.registration_token")) {
				t.Fatalf("flows = %+v", uia.Flows)
			}
			req.Auth = map[string]any{"type": "m.login.registration_token", "token": token, "session": uia.Session}
			resp, _, err := cli.Register(ctx, req)
			return resp, err
		}
		if _, err := register("u1", "wrong-token"); err == nil {
			t.Fatal("registration with an unknown token succeeded")
		}
		for _, name := range []string{"u1", "u2"} {
			if resp, err := register(name, tok.Token); err != nil || resp.UserID != id.NewUserID(name, "localhost") {
				t.Fatalf("register %s: %+v, %v", name, resp, err)
			}
		}
		// Used up: the third registration is refused and the token is invalid.
		if _, err := register("u3", tok.Token); err == nil {
			t.Fatal("a used-up token allowed a third registration")
		}
		if validity(tok.Token) {
			t.Fatal("used-up token still reported valid")
		}
		_, err = admin.MakeRequest(ctx, http.MethodGet, admin.BuildURL(mautrix.SynapseAdminURLPath{"v1", "registration_tokens", tok.Token}), nil, &tok)
		if err != nil || tok.Completed != 2 || tok.Pending != 0 {
			t.Fatalf("token after use = %+v, %v", tok, err)
		}
		// Raising the limit makes it usable again; deleting it kills it.
		_, err = admin.MakeRequest(ctx, http.MethodPut, admin.BuildURL(mautrix.SynapseAdminURLPath{"v1", "registration_tokens", tok.Token}), map[string]any{"uses_allowed": nil}, &tok)
		if err != nil || tok.UsesAllowed != nil || !validity(tok.Token) {
			t.Fatalf("unlimited token = %+v, %v", tok, err)
		}
		_, err = admin.MakeRequest(ctx, http.MethodDelete, admin.BuildURL(mautrix.SynapseAdminURLPath{"v1", "registration_tokens", tok.Token}), nil, nil)
		if err != nil || validity(tok.Token) {
			t.Fatalf("delete token: %v", err)
		}
	})
}

func TestSharedSecretRegistration(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		admin := &synapseadmin.Client{Client: srv.Client()}
		resp, err := admin.SharedSecretRegister(ctx, hstest.SharedSecret, synapseadmin.ReqSharedSecretRegister{
			Username: "ops", Password: pw, Admin: true, Displayname: "Ops Team",
		})
		if err != nil || resp.UserID != "@ops:localhost" || resp.AccessToken == "" {
			t.Fatalf("shared-secret register = %+v, %v", resp, err)
		}
		cli := srv.Login("ops", pw)
		name, err := cli.GetOwnDisplayName(ctx)
		if err != nil || name.DisplayName != "Ops Team" {
			t.Fatalf("displayname = %+v, %v", name, err)
		}
		// The user is an admin: the admin API answers.
		if _, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildURL(mautrix.SynapseAdminURLPath{"v1", "registration_tokens"}), nil, nil); err != nil {
			t.Fatalf("admin API as shared-secret admin: %v", err)
		}

		// A replayed nonce is refused even with a correct MAC.
		nonce, err := admin.GetRegisterNonce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := synapseadmin.ReqSharedSecretRegister{Username: "first", Password: pw, Nonce: nonce}
		if _, err := admin.SharedSecretRegister(ctx, hstest.SharedSecret, req); err != nil {
			t.Fatalf("first use of nonce: %v", err)
		}
		req.Username = "second"
		_, err = admin.SharedSecretRegister(ctx, hstest.SharedSecret, req)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		// A wrong secret is refused.
		_, err = admin.SharedSecretRegister(ctx, "not-the-secret-at-all", synapseadmin.ReqSharedSecretRegister{Username: "third", Password: pw})
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		if _, err := srv.HS.DB.GetUser(ctx, "@second:localhost"); err == nil {
			t.Fatal("replayed nonce created a user")
		}
	})
}

func TestLoginDevicesAndLogout(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		srv.CreateUser("alice", pw, false)
		flows, err := srv.Client().GetLoginFlows(ctx)
		if err != nil || !flows.HasFlow(mautrix.AuthTypePassword) {
			t.Fatalf("login flows = %+v, %v", flows, err)
		}

		// Full user ID and localpart both work; the client may name its device.
		phone := srv.Client()
		resp, err := phone.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "@alice:localhost"},
			Password:   pw, DeviceID: "PHONE", InitialDeviceDisplayName: "Phone", StoreCredentials: true})
		if err != nil || resp.DeviceID != "PHONE" || resp.WellKnown == nil || resp.WellKnown.Homeserver.BaseURL != srv.URL {
			t.Fatalf("login = %+v, %v", resp, err)
		}
		laptop := srv.Login("alice", pw)

		devs, err := laptop.GetDevicesInfo(ctx)
		if err != nil || len(devs.Devices) != 2 {
			t.Fatalf("devices = %+v, %v", devs, err)
		}
		if err := laptop.SetDeviceInfo(ctx, "PHONE", &mautrix.ReqDeviceInfo{DisplayName: "Old phone"}); err != nil {
			t.Fatal(err)
		}
		dev, err := phone.GetDeviceInfo(ctx, "PHONE")
		if err != nil || dev.DisplayName != "Old phone" || dev.LastSeenTS == 0 {
			t.Fatalf("device = %+v, %v", dev, err)
		}
		_, err = laptop.GetDeviceInfo(ctx, "NOPE")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)

		// Logging in again with the same device_id replaces its old token.
		again := srv.Client()
		if _, err := again.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
			Password:   pw, DeviceID: "PHONE", StoreCredentials: true}); err != nil {
			t.Fatal(err)
		}
		_, err = phone.Whoami(ctx)
		mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)
		if dev, err := again.GetDeviceInfo(ctx, "PHONE"); err != nil || dev.DisplayName != "Old phone" {
			t.Fatalf("re-login must keep the device's name: %+v, %v", dev, err)
		}

		// Deleting a device needs the password (UIA) and kills its token.
		session := uiaSession(t, laptop, "PHONE")
		var httpErr mautrix.HTTPError
		err = laptop.DeleteDevice(ctx, "PHONE", &mautrix.ReqDeleteDevice[any]{Auth: passwordAuth(session, "alice", "wrong password")})
		if !errors.As(err, &httpErr) || httpErr.Response.StatusCode != http.StatusUnauthorized || !errors.Is(err, mautrix.MForbidden) {
			t.Fatalf("delete with wrong password: %v", err)
		}
		if err := laptop.DeleteDevice(ctx, "PHONE", &mautrix.ReqDeleteDevice[any]{Auth: passwordAuth(session, "alice", pw)}); err != nil {
			t.Fatalf("delete with password: %v", err)
		}
		_, err = again.Whoami(ctx)
		mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)

		// /logout deletes the device; /logout/all every device.
		third := srv.Login("alice", pw)
		if _, err := laptop.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		devs, err = third.GetDevicesInfo(ctx)
		if err != nil || len(devs.Devices) != 1 || devs.Devices[0].DeviceID != third.DeviceID {
			t.Fatalf("devices after logout = %+v, %v", devs, err)
		}
		fourth := srv.Login("alice", pw)
		if _, err := fourth.LogoutAll(ctx); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{third, fourth} {
			_, err = c.Whoami(ctx)
			mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)
		}
	})
}

// uiaSession starts a device deletion without auth to obtain a session.
func uiaSession(t *testing.T, cli *mautrix.Client, device id.DeviceID) string {
	t.Helper()
	body, err := cli.MakeRequest(ctx, http.MethodDelete, cli.BuildClientURL("v3", "devices", device), map[string]any{}, nil)
	uia := uiaChallenge(t, body, err)
	if !uia.HasSingleStageFlow(mautrix.AuthTypePassword) {
		t.Fatalf("UIA flows = %+v", uia.Flows)
	}
	return uia.Session
}

// uiaChallenge asserts err is a UIA 401 and parses its body.
func uiaChallenge(t *testing.T, body []byte, err error) *mautrix.RespUserInteractive {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode != http.StatusUnauthorized {
		t.Fatalf("want a 401 UIA challenge, got %v", err)
	}
	var uia mautrix.RespUserInteractive
	if jsonErr := json.Unmarshal(body, &uia); jsonErr != nil || uia.Session == "" || len(uia.Flows) == 0 {
		t.Fatalf("bad UIA body %s: %v", body, jsonErr)
	}
	return &uia
}

func passwordAuth(session, user, password string) map[string]any {
	return map[string]any{"type": "m.login.password", "session": session, "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": user}}
}

func TestPasswordChange(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		srv.CreateUser("alice", pw, false)
		main := srv.Login("alice", pw)
		other := srv.Login("alice", pw)
		url := main.BuildClientURL("v3", "account", "password")

		change := func(cli *mautrix.Client, newPW string, logout *bool, auth any) ([]byte, error) {
			body := map[string]any{"new_password": newPW, "auth": auth}
			if logout != nil {
				body["logout_devices"] = *logout
			}
			return cli.MakeRequest(ctx, http.MethodPost, url, body, nil)
		}
		// Without auth: 401 with the password flow and a session.
		body, err := change(main, "new password one", nil, nil)
		uia := uiaChallenge(t, body, err)
		// Another user's password does not authorise alice's change.
		srv.CreateUser("bob", pw, false)
		_, err = change(main, "new password one", nil, passwordAuth(uia.Session, "bob", pw))
		if !errors.Is(err, mautrix.MForbidden) {
			t.Fatalf("bob's password accepted for alice: %v", err)
		}
		if _, err := change(main, "new password one", nil, passwordAuth(uia.Session, "alice", pw)); err != nil {
			t.Fatalf("change password: %v", err)
		}
		// Default logout_devices=true: the other device is gone, this one stays.
		if _, err := main.Whoami(ctx); err != nil {
			t.Fatalf("own session must survive: %v", err)
		}
		_, err = other.Whoami(ctx)
		mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)
		_, err = srv.Client().Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: pw})
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)

		// logout_devices=false keeps the other sessions.
		other = srv.Login("alice", "new password one")
		keep := false
		body, err = change(main, "new password two", &keep, nil)
		uia = uiaChallenge(t, body, err)
		if _, err := change(main, "new password two", &keep, passwordAuth(uia.Session, "alice", "new password one")); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Whoami(ctx); err != nil {
			t.Fatalf("logout_devices=false logged out a device: %v", err)
		}
		srv.Login("alice", "new password two")
	})
}

func TestDeactivate(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, openRegistration)
		srv.CreateUser("leaver", pw, false)
		cli := srv.Login("leaver", pw)
		second := srv.Login("leaver", pw)
		if err := cli.SetDisplayName(ctx, "Leaving Soon"); err != nil {
			t.Fatal(err)
		}
		url := cli.BuildClientURL("v3", "account", "deactivate")
		body, err := cli.MakeRequest(ctx, http.MethodPost, url, map[string]any{"erase": true}, nil)
		uia := uiaChallenge(t, body, err)
		var resp struct {
			Result string `json:"id_server_unbind_result"`
		}
		if _, err := cli.MakeRequest(ctx, http.MethodPost, url, map[string]any{"erase": true, "auth": passwordAuth(uia.Session, "leaver", pw)}, &resp); err != nil {
			t.Fatalf("deactivate: %v", err)
		}
		if resp.Result != "no-support" {
			t.Fatalf("id_server_unbind_result = %q", resp.Result)
		}
		for _, c := range []*mautrix.Client{cli, second} {
			_, err = c.Whoami(ctx)
			mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)
		}
		_, err = srv.Client().Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "leaver"}, Password: pw})
		if !errors.Is(err, mautrix.MUserDeactivated) {
			t.Fatalf("login after deactivation: %v", err)
		}
		// Deactivation removed the password: even the old one is refused.
		_, err = srv.Client().Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "leaver"}, Password: "guess"})
		if err == nil {
			t.Fatal("login to a deactivated account succeeded")
		}
		// erase=true removed the profile; the ID can never be registered again.
		prof, err := srv.Client().GetProfile(ctx, "@leaver:localhost")
		if err != nil || prof.DisplayName != "" {
			t.Fatalf("profile after erase = %+v, %v", prof, err)
		}
		_, err = srv.Client().RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "leaver", Password: pw})
		mustErr(t, err, mautrix.MUserInUse, http.StatusBadRequest)
	})
}

func TestProfile(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := srv.NewUser("alice")
		bob := srv.NewUser("bob")
		if err := alice.SetDisplayName(ctx, "Alice 🐇"); err != nil {
			t.Fatal(err)
		}
		avatar := id.MustParseContentURI("mxc://localhost/abcdef")
		if err := alice.SetAvatarURL(ctx, avatar); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetProfileField(ctx, "m.tz", "Europe/Helsinki"); err != nil {
			t.Fatal(err)
		}
		if err := alice.SetProfileField(ctx, "org.example.pronouns", map[string]any{"en": "she/her"}); err != nil {
			t.Fatal(err)
		}
		prof, err := bob.GetProfile(ctx, alice.UserID)
		if err != nil || prof.DisplayName != "Alice 🐇" || prof.AvatarURL != avatar || prof.Extra["m.tz"] != "Europe/Helsinki" {
			t.Fatalf("profile = %+v, %v", prof, err)
		}
		var tz map[string]string
		if err := bob.GetProfileField(ctx, alice.UserID, "m.tz", &tz); err != nil || tz["m.tz"] != "Europe/Helsinki" {
			t.Fatalf("m.tz = %v, %v", tz, err)
		}
		if err := alice.DeleteProfileField(ctx, "m.tz"); err != nil {
			t.Fatal(err)
		}
		err = bob.GetProfileField(ctx, alice.UserID, "m.tz", &tz)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		// Bob cannot change Alice's name.
		_, err = bob.MakeRequest(ctx, http.MethodPut, bob.BuildClientURL("v3", "profile", alice.UserID, "displayname"), map[string]any{"displayname": "Evil"}, nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		// Unknown users have no profile.
		_, err = bob.GetProfile(ctx, "@nobody:localhost")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		if name, err := bob.GetDisplayName(ctx, alice.UserID); err != nil || name.DisplayName != "Alice 🐇" {
			t.Fatalf("displayname = %+v, %v", name, err)
		}
	})
}

func TestRefreshTokens(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		srv.CreateUser("alice", pw, false)
		cli := srv.Client()
		login, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
			Password:   pw, RefreshToken: true, StoreCredentials: true})
		if err != nil || login.RefreshToken == "" || login.ExpiresInMS != (5*time.Minute).Milliseconds() {
			t.Fatalf("login = %+v, %v", login, err)
		}
		refresh := func(token string) (access, next string, err error) {
			var resp struct {
				AccessToken  string `json:"access_token"`
				RefreshToken string `json:"refresh_token"`
				ExpiresInMS  int64  `json:"expires_in_ms"`
			}
			_, err = srv.Client().MakeRequest(ctx, http.MethodPost, cli.BuildClientURL("v3", "refresh"), map[string]any{"refresh_token": token}, &resp)
			if err == nil && (resp.ExpiresInMS <= 0 || resp.AccessToken == "" || resp.RefreshToken == "") {
				t.Fatalf("refresh response = %+v", resp)
			}
			return resp.AccessToken, resp.RefreshToken, err
		}
		access1, refresh1, err := refresh(login.RefreshToken)
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		// The old refresh token works until the new generation is used.
		access2, refresh2, err := refresh(login.RefreshToken)
		if err != nil {
			t.Fatalf("repeated refresh before use: %v", err)
		}
		// The first answer was superseded (the client lost it).
		if _, _, err := refresh(refresh1); err == nil {
			t.Fatal("superseded refresh token still works")
		}
		_ = access1
		cli.AccessToken = access2
		if who, err := cli.Whoami(ctx); err != nil || who.DeviceID != login.DeviceID {
			t.Fatalf("whoami with refreshed token = %+v, %v", who, err)
		}
		// Now the original refresh token is dead, and so is its access token.
		_, _, err = refresh(login.RefreshToken)
		mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)
		old := srv.Client()
		old.SetCredentials(login.UserID, login.AccessToken)
		_, err = old.Whoami(ctx)
		mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)
		if _, _, err := refresh(refresh2); err != nil {
			t.Fatalf("current refresh token: %v", err)
		}
		// Clients that don't ask for refresh get non-expiring tokens.
		plain, err := srv.Client().Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: pw})
		if err != nil || plain.RefreshToken != "" || plain.ExpiresInMS != 0 {
			t.Fatalf("plain login = %+v, %v", plain, err)
		}
	})
}

func TestDiscovery(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	cli := srv.Client()
	versions, err := cli.Versions(ctx)
	if err != nil || !versions.Contains(mautrix.SpecV11) {
		t.Fatalf("versions = %+v, %v", versions, err)
	}
	var wk mautrix.ClientWellKnown
	if _, err := cli.MakeRequest(ctx, http.MethodGet, srv.URL+"/.well-known/matrix/client", nil, &wk); err != nil || wk.Homeserver.BaseURL != srv.URL {
		t.Fatalf("client well-known = %+v, %v", wk, err)
	}
	var server struct {
		Server string `json:"m.server"`
	}
	if _, err := cli.MakeRequest(ctx, http.MethodGet, srv.URL+"/.well-known/matrix/server", nil, &server); err != nil || "http://"+server.Server != srv.URL {
		t.Fatalf("server well-known = %+v, %v", server, err)
	}
	user := srv.NewUser("caps")
	caps, err := user.Capabilities(ctx)
	if err != nil || caps.ChangePassword == nil || !caps.ChangePassword.Enabled {
		t.Fatalf("capabilities = %+v, %v", caps, err)
	}
	if caps.RoomVersions == nil || caps.RoomVersions.Default != "12" || caps.RoomVersions.Available["10"] != "stable" {
		t.Fatalf("room versions capability = %+v", caps.RoomVersions)
	}
	if !slices.Contains(versions.Versions, mautrix.SpecV116) {
		t.Fatalf("versions lack v1.16: %v", versions.Versions)
	}
}
