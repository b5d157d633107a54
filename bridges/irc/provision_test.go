package irc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

const provSecret = "irc-provisioning-secret-for-tests-0123456789"

// provCall calls matrix-appservice-irc's provisioning API as an
// integration manager does, and returns the status and the JSON answer.
func (e *env) provCall(method, path, token, body string) (int, any) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, e.cfg.URL+"/_matrix/provision"+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatalf("%s %s: HTTP %d, not JSON: %v", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// provJSON is a request body: fields, and the user an integration manager
// acts for.
func provJSON(fields map[string]any) string {
	b, _ := json.Marshal(fields)
	return string(b)
}

func errcodeOf(out any) string {
	m, _ := out.(map[string]any)
	s, _ := m["errcode"].(string)
	return s
}

// pm matches a private message to nick with text in it.
func pm(from, to, text string) func(*irc.Message) bool {
	return func(m *irc.Message) bool {
		return ircMsg("PRIVMSG", from, to, "")(m) && strings.Contains(m.Trailing(), text)
	}
}

// notice matches the bot's automatic replies, NOTICEs.
func notice(from, to, text string) func(*irc.Message) bool {
	return func(m *irc.Message) bool {
		return ircMsg("NOTICE", from, to, "")(m) && strings.Contains(m.Trailing(), text)
	}
}

// thirdParty asks the homeserver's /thirdparty API, as a Matrix client.
func thirdParty[T any](e *env, cli *mautrix.Client, query map[string]string, path ...any) T {
	e.t.Helper()
	var out T
	u := cli.BuildURLWithQuery(append(mautrix.ClientURLPath{"v3", "thirdparty"}, path...), query)
	if _, err := cli.MakeRequest(e.ctx, http.MethodGet, u, nil, &out); err != nil {
		e.t.Fatalf("GET thirdparty/%v: %v", path, err)
	}
	return out
}

// matrix-appservice-irc's provisioning API, as Dimension drives it: the
// networks, the channel's operators, a link an operator approves on IRC,
// the links of a room, and an unlink; bad requests get its errcodes. And
// the third-party protocol "irc" through the homeserver's client API.
func TestProvisioningAPI(t *testing.T) {
	e := startEnv(t, func(c *Config) {
		c.Provisioning.SharedSecret = provSecret
		c.Permissions = map[string]bridge.Permission{c.ServerName: bridge.PermissionUser, "@admin:" + c.ServerName: bridge.PermissionAdmin}
	})
	// The registration bridge.New wrote declares the protocol "irc": the
	// operator loads it (startEnv registered the one written before).
	if got := e.br.Framework.AS.Registration.Protocols; len(got) != 1 || got[0] != "irc" {
		t.Fatalf("registration protocols = %v, want [irc]", got)
	}
	e.kit.RegisterAppservice(e.br.Framework.AS.Registration)
	ctx, server, bot := e.ctx, e.kit.ServerName, e.cfg.BotID()
	alice, bob, carol := e.kit.NewUser("alice"), e.kit.NewUser("bob"), e.kit.NewUser("carol")

	// opal is first in #prov, so its operator; pete is not.
	opal := e.ircUser("opal", "#prov")
	pete := e.ircUser("pete", "#prov")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Prov room", RoomAliasName: "provroom",
		Invite: []id.UserID{bot, bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	linkBody := func(user *mautrix.Client, room id.RoomID, channel, op string) string {
		return provJSON(map[string]any{"matrix_room_id": room, "remote_room_server": "test", "remote_room_channel": channel,
			"op_nick": op, "user_id": user.UserID})
	}

	t.Run("querynetworks", func(t *testing.T) {
		status, out := e.provCall("GET", "/querynetworks", provSecret, "")
		servers, _ := out.(map[string]any)["servers"].([]any)
		if status != 200 || len(servers) != 1 {
			t.Fatalf("querynetworks: HTTP %d %v", status, out)
		}
		s := servers[0].(map[string]any)
		fields, _ := s["fields"].(map[string]any)
		if s["network_id"] != "test" || s["desc"] != "Test" || s["bot_user_id"] != string(bot) || fields["domain"] != "test" {
			t.Errorf("server = %v", s)
		}
	})

	t.Run("querylink lists the operators", func(t *testing.T) {
		body := provJSON(map[string]any{"remote_room_server": "test", "remote_room_channel": "#prov"})
		status, out := e.provCall("POST", "/querylink", provSecret, body)
		if status != 200 || fmt.Sprint(out.(map[string]any)["operators"]) != "[opal]" {
			t.Errorf("querylink: HTTP %d %v, want operators [opal]", status, out)
		}
		// The user's own OpenID token works too.
		openID, err := alice.RequestOpenIDToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		status, out = e.provCall("POST", "/querylink", openID.AccessToken, body)
		if status != 200 || fmt.Sprint(out.(map[string]any)["operators"]) != "[opal]" {
			t.Errorf("querylink with an OpenID token: HTTP %d %v", status, out)
		}
		// Asked at once, the bot's NAMES answers them all.
		answers := make(chan string, 3)
		for range cap(answers) {
			go func() {
				status, out := e.provCall("POST", "/querylink", provSecret, body)
				answers <- fmt.Sprint(status, out)
			}()
		}
		for range cap(answers) {
			if got := <-answers; got != "200 map[operators:[opal]]" {
				t.Errorf("concurrent querylink: %s", got)
			}
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, c := range []struct {
			name, method, path, token, body string
			status                          int
			errcode                         string
		}{
			{"no token", "GET", "/querynetworks", "", "", 401, "M_MISSING_TOKEN"},
			{"wrong token", "GET", "/querynetworks", "not-the-secret", "", 401, "M_UNKNOWN_TOKEN"},
			{"link without a user", "POST", "/link", provSecret, `{"matrix_room_id": "` + string(room) + `", "remote_room_server": "test", "remote_room_channel": "#prov", "op_nick": "opal"}`, 400, "M_INVALID_PARAM"},
			{"user of another server", "POST", "/link", provSecret, provJSON(map[string]any{"matrix_room_id": room, "remote_room_server": "test", "remote_room_channel": "#prov", "op_nick": "opal", "user_id": "@eve:elsewhere.example"}), 403, "M_FORBIDDEN"},
			{"user without power", "POST", "/link", provSecret, linkBody(bob, room, "#prov", "opal"), 403, "IRC_NOT_ENOUGH_POWER"},
			{"op who is no op", "POST", "/link", provSecret, linkBody(alice, room, "#prov", "pete"), 400, "IRC_BAD_OPERATOR_TARGET"},
			{"op not in the channel", "POST", "/link", provSecret, linkBody(alice, room, "#prov", "nobody"), 400, "IRC_BAD_OPERATOR_TARGET"},
			{"no op", "POST", "/link", provSecret, linkBody(alice, room, "#prov", ""), 400, "M_AS_BAD_VALUE"},
			{"unknown network", "POST", "/link", provSecret, provJSON(map[string]any{"matrix_room_id": room, "remote_room_server": "irc.nowhere.example", "remote_room_channel": "#prov", "op_nick": "opal", "user_id": alice.UserID}), 404, "IRC_UNKNOWN_NETWORK"},
			{"invalid channel", "POST", "/link", provSecret, linkBody(alice, room, "prov", "opal"), 400, "M_AS_BAD_VALUE"},
			{"channel missing", "POST", "/link", provSecret, provJSON(map[string]any{"matrix_room_id": room, "remote_room_server": "test", "op_nick": "opal", "user_id": alice.UserID}), 400, "M_AS_BAD_VALUE"},
			{"not a room ID", "POST", "/link", provSecret, linkBody(alice, "#provroom:"+id.RoomID(server), "#prov", "opal"), 400, "M_AS_BAD_VALUE"},
			{"channel key IRC cannot take", "POST", "/link", provSecret, provJSON(map[string]any{"matrix_room_id": room, "remote_room_server": "test", "remote_room_channel": "#prov", "op_nick": "opal", "key": "open sesame", "user_id": alice.UserID}), 400, "M_AS_BAD_VALUE"},
			{"channel of the wrong type", "POST", "/link", provSecret, `{"remote_room_server": "test", "remote_room_channel": 5, "user_id": "` + string(alice.UserID) + `"}`, 400, "M_AS_BAD_VALUE"},
			{"not JSON", "POST", "/link?user_id=" + string(alice.UserID), provSecret, "link it please", 400, "M_NOT_JSON"},
			{"users differ", "POST", "/link?user_id=" + string(bob.UserID), provSecret, linkBody(alice, room, "#prov", "opal"), 400, "M_AS_BAD_VALUE"},
			{"querylink on an unknown network", "POST", "/querylink", provSecret, `{"remote_room_server": "nope", "remote_room_channel": "#prov"}`, 404, "IRC_UNKNOWN_NETWORK"},
			{"querylink without a channel", "POST", "/querylink", provSecret, `{"remote_room_server": "test"}`, 400, "M_AS_BAD_VALUE"},
			{"unlink of a room not bridged", "POST", "/unlink", provSecret, linkBody(alice, room, "#prov", ""), 404, "IRC_UNKNOWN_ROOM"},
			{"listlinks of no room", "GET", "/listlinks/provroom", provSecret, "", 400, "M_AS_BAD_VALUE"},
			{"unknown endpoint", "GET", "/nothing", provSecret, "", 404, "M_UNRECOGNIZED"},
		} {
			status, out := e.provCall(c.method, c.path, c.token, c.body)
			if status != c.status || errcodeOf(out) != c.errcode {
				t.Errorf("%s: HTTP %d %v, want %d %s", c.name, status, out, c.status, c.errcode)
			}
		}
	})

	t.Run("link approved by the op", func(t *testing.T) {
		status, out := e.provCall("POST", "/link", provSecret, linkBody(alice, room, "#prov", "opal"))
		if status != 200 {
			t.Fatalf("link: HTTP %d %v", status, out)
		}
		ask := opal.Expect(wait, pm("mxbridge", "opal", "has requested to bridge"))
		if text := ask.Trailing(); !strings.Contains(text, string(alice.UserID)) || !strings.Contains(text, "'Prov room'") || !strings.Contains(text, "#prov") {
			t.Errorf("the op was asked %q", text)
		}
		testkit.WaitForEvent(t, alice, room, from(bot, bodyHas("asked opal, an operator of #prov on Test")), wait)
		// One question at a time per op.
		other, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot}})
		if err != nil {
			t.Fatal(err)
		}
		if status, out := e.provCall("POST", "/link", provSecret, linkBody(alice, other.RoomID, "#prov", "opal")); status != 409 || errcodeOf(out) != "IRC_EXISTING_REQUEST" {
			t.Errorf("second request to the op: HTTP %d %v", status, out)
		}
		opal.Send("PRIVMSG mxbridge :maybe")
		opal.Expect(wait, notice("mxbridge", "opal", `Please respond with "yes" or "y".`))
		opal.Send("PRIVMSG mxbridge :Yes")
		opal.Expect(wait, notice("mxbridge", "opal", "bridge request authorised"))
		testkit.WaitForEvent(t, alice, room, from(bot, bodyHas("This room is now bridged to #prov on Test, as opal approved.")), wait)
		opal.Expect(wait, ircCmd("JOIN", "mxbridge", "#prov"))

		e.sendText(alice, room, "hello irc")
		opal.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#prov", "hello irc"))
		pete.Send("PRIVMSG #prov :hello matrix")
		testkit.WaitForEvent(t, alice, room, from(e.ghost("pete"), testkit.HasBody("hello matrix")), wait)

		if status, out := e.provCall("POST", "/link", provSecret, linkBody(alice, room, "#prov", "opal")); status != 409 || errcodeOf(out) != "IRC_EXISTING_MAPPING" {
			t.Errorf("link again: HTTP %d %v", status, out)
		}
		opal.Send("PRIVMSG mxbridge :yes")
		opal.Expect(wait, notice("mxbridge", "opal", "was not expecting a message from you"))
	})

	t.Run("listlinks and limits", func(t *testing.T) {
		want := fmt.Sprintf("[map[matrix_room_id:%s remote_room_channel:#prov remote_room_server:test]]", room)
		for _, c := range []struct {
			name, query, want string
		}{
			{"integration manager", "", want},
			{"member", "?user_id=" + string(bob.UserID), want},
			{"not a member", "?user_id=" + string(carol.UserID), "[]"},
		} {
			status, out := e.provCall("GET", "/listlinks/"+string(room)+c.query, provSecret, "")
			if status != 200 || fmt.Sprint(out) != c.want {
				t.Errorf("listlinks as %s: HTTP %d %v, want %s", c.name, status, out, c.want)
			}
		}
		status, out := e.provCall("GET", "/limits", provSecret, "")
		if m, _ := out.(map[string]any); status != 200 || m["count"] != float64(1) || m["limit"] != false {
			t.Errorf("limits: HTTP %d %v", status, out)
		}
	})

	t.Run("third-party protocol irc", func(t *testing.T) {
		protocols := thirdParty[map[string]bridge.Protocol](e, alice, nil, "protocols")
		p, ok := protocols["irc"]
		if !ok || len(p.Instances) != 1 || p.Instances[0].NetworkID != "test" || p.Instances[0].Fields["network"] != "test" ||
			fmt.Sprint(p.LocationFields) != "[network channel]" || fmt.Sprint(p.UserFields) != "[network nickname]" ||
			p.FieldTypes["channel"].Placeholder != "#foo" || p.FieldTypes["network"].Placeholder != "irc.example.net" {
			t.Errorf("protocols = %+v", protocols)
		}
		alias := id.NewRoomAlias("irc_test_#prov", server)
		locations := thirdParty[[]bridge.ThirdPartyLocation](e, alice, map[string]string{"network": "test", "channel": "#Prov"}, "location", "irc")
		if len(locations) != 1 || locations[0].Alias != alias || locations[0].Fields["channel"] != "#prov" {
			t.Fatalf("location of #Prov = %+v, want %s", locations, alias)
		}
		// The alias leads to the bridged room.
		if resolved, err := alice.ResolveAlias(ctx, alias); err != nil || resolved.RoomID != room {
			t.Errorf("%s resolves to %+v (%v), want %s", alias, resolved, err, room)
		}
		// Without a channel: the network's bridged channels.
		if all := thirdParty[[]bridge.ThirdPartyLocation](e, alice, map[string]string{"network": "test"}, "location", "irc"); len(all) != 1 || all[0].Alias != alias {
			t.Errorf("locations of network test = %+v", all)
		}
		for _, a := range []id.RoomAlias{alias, id.NewRoomAlias("provroom", server)} {
			back := thirdParty[[]bridge.ThirdPartyLocation](e, alice, map[string]string{"alias": a.String()}, "location")
			if len(back) != 1 || back[0].Fields["network"] != "test" || back[0].Fields["channel"] != "#prov" {
				t.Errorf("reverse lookup of %s = %+v", a, back)
			}
		}
		users := thirdParty[[]bridge.ThirdPartyUser](e, alice, map[string]string{"network": "test", "nickname": "pete"}, "user", "irc")
		if len(users) != 1 || users[0].UserID != e.ghost("pete") {
			t.Errorf("user pete = %+v, want %s", users, e.ghost("pete"))
		}
		users = thirdParty[[]bridge.ThirdPartyUser](e, alice, map[string]string{"userid": string(e.ghost("pete"))}, "user")
		if len(users) != 1 || users[0].Fields["nickname"] != "pete" || users[0].Fields["network"] != "test" {
			t.Errorf("reverse lookup of pete's ghost = %+v", users)
		}
		if none := thirdParty[[]bridge.ThirdPartyLocation](e, alice, map[string]string{"network": "elsewhere", "channel": "#prov"}, "location", "irc"); len(none) != 0 {
			t.Errorf("location on an unknown network = %+v, want none", none)
		}
	})

	t.Run("unlink", func(t *testing.T) {
		unlinkBody := func(user *mautrix.Client) string {
			return provJSON(map[string]any{"matrix_room_id": room, "remote_room_server": "test", "remote_room_channel": "#prov", "user_id": user.UserID})
		}
		if status, out := e.provCall("POST", "/unlink", provSecret, unlinkBody(bob)); status != 403 || errcodeOf(out) != "IRC_NOT_ENOUGH_POWER" {
			t.Errorf("unlink by bob: HTTP %d %v", status, out)
		}
		if status, out := e.provCall("POST", "/unlink", provSecret, provJSON(map[string]any{"matrix_room_id": room, "remote_room_server": "test", "remote_room_channel": "#other", "user_id": alice.UserID})); status != 404 || errcodeOf(out) != "IRC_UNKNOWN_ROOM" {
			t.Errorf("unlink of another channel: HTTP %d %v", status, out)
		}
		if status, out := e.provCall("POST", "/unlink", provSecret, unlinkBody(alice)); status != 200 {
			t.Fatalf("unlink: HTTP %d %v", status, out)
		}
		opal.Expect(wait, ircCmd("PART", "mxbridge", "#prov"))
		if status, out := e.provCall("GET", "/listlinks/"+string(room), provSecret, ""); status != 200 || fmt.Sprint(out) != "[]" {
			t.Errorf("listlinks after the unlink: HTTP %d %v", status, out)
		}
		e.sendText(alice, room, "anyone there?")
		if m, err := opal.Next(2*time.Second, ircMsg("PRIVMSG", "alice[m]", "#prov", "anyone there?")); err != ircxtest.ErrTimeout {
			t.Errorf("after the unlink, IRC got %v (%v)", m, err)
		}
	})

	// #quiet, which the bot is not in: opal is its operator.
	opal.Send("JOIN #quiet")
	opal.Expect(wait, func(m *irc.Message) bool { return m.Command == "366" && strings.EqualFold(m.Param(1), "#quiet") })
	quiet, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot}})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("the op does not answer", func(t *testing.T) {
		e.br.core.prov.approvalTimeout.Store(int64(2 * time.Second))
		defer e.br.core.prov.approvalTimeout.Store(int64(defaultApprovalTimeout))
		if status, out := e.provCall("POST", "/link", provSecret, linkBody(alice, quiet.RoomID, "#quiet", "opal")); status != 200 {
			t.Fatalf("link: HTTP %d %v", status, out)
		}
		opal.Expect(wait, pm("mxbridge", "opal", "You have 2 seconds"))
		testkit.WaitForEvent(t, alice, quiet.RoomID, from(bot, bodyHas("opal did not approve bridging this room to #quiet on Test in time")), wait)
	})

	t.Run("the op answers no", func(t *testing.T) {
		if status, out := e.provCall("POST", "/link", provSecret, linkBody(alice, quiet.RoomID, "#quiet", "opal")); status != 200 {
			t.Fatalf("link again: HTTP %d %v", status, out)
		}
		opal.Expect(wait, pm("mxbridge", "opal", "has requested to bridge"))
		opal.Send("PRIVMSG mxbridge :no")
		opal.Expect(wait, notice("mxbridge", "opal", "Thanks for your response: the room is not bridged."))
		testkit.WaitForEvent(t, alice, quiet.RoomID, from(bot, bodyHas("opal refused to bridge this room to #quiet on Test.")), wait)
		if status, out := e.provCall("GET", "/listlinks/"+string(quiet.RoomID), provSecret, ""); status != 200 || fmt.Sprint(out) != "[]" {
			t.Errorf("listlinks: HTTP %d %v", status, out)
		}
		if m, err := opal.Next(2*time.Second, ircCmd("JOIN", "mxbridge", "#quiet")); err != ircxtest.ErrTimeout {
			t.Errorf("after the refusal, the bot joined: %v (%v)", m, err)
		}
		// The question is over: a late yes links nothing.
		opal.Send("PRIVMSG mxbridge :yes")
		opal.Expect(wait, notice("mxbridge", "opal", "was not expecting a message from you"))
	})

	t.Run("bridge admins link at once", func(t *testing.T) {
		pete.Send("JOIN #adm")
		pete.Expect(wait, func(m *irc.Message) bool { return m.Command == "366" && strings.EqualFold(m.Param(1), "#adm") })
		adm, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot}})
		if err != nil {
			t.Fatal(err)
		}
		body := provJSON(map[string]any{"matrix_room_id": adm.RoomID, "remote_room_server": "test", "remote_room_channel": "#adm", "user_id": "@admin:" + server})
		if status, out := e.provCall("POST", "/link", provSecret, body); status != 200 {
			t.Fatalf("link by an admin: HTTP %d %v", status, out)
		}
		pete.Expect(wait, ircCmd("JOIN", "mxbridge", "#adm"))
		testkit.WaitForEvent(t, alice, adm.RoomID, from(bot, bodyHas("This room is now bridged to #adm on Test.")), wait)
		testkit.WaitForJoin(t, alice, adm.RoomID, e.ghost("pete"), wait)
	})
}
