package irc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

// End-to-end tests: a real homeserver (testkit), a real ngircd
// (ircxtest), the bridge as `switchboard irc` runs it, Matrix users as
// mautrix clients and IRC users as scripted irc.v3 clients, each asserting
// what its user sees.

const wait = 10 * time.Second

type env struct {
	t   *testing.T
	kit *testkit.Kit
	// addr is the IRC server's; srv is it when it is an ngircd.
	addr string
	srv  *ircxtest.Server
	cfg  *Config
	br   *Bridge
	ctx  context.Context
	// botCli acts as the bridge bot, which sees every portal room.
	botCli *mautrix.Client
	stop   func() // stops the running bridge
}

// startEnv starts a homeserver, ngircd and the bridge with one network
// "test" on it; tune adjusts the config before it is validated.
func startEnv(t *testing.T, tune func(*Config)) *env {
	t.Helper()
	return startEnvWith(t, tune, nil)
}

// startEnvWith is startEnv with beforeRun called once the appservice is
// registered, before the bridge starts (to create rooms for mappings).
func startEnvWith(t *testing.T, tune func(*Config), beforeRun func(*env)) *env {
	t.Helper()
	return startEnvOn(t, nil, tune, beforeRun)
}

// startEnvOn is startEnvWith on an ngircd started with opts.
func startEnvOn(t *testing.T, opts *ircxtest.Options, tune func(*Config), beforeRun func(*env)) *env {
	t.Helper()
	srv := ircxtest.Start(t, opts)
	e := startEnvAt(t, srv.Addr, tune, beforeRun)
	e.srv = srv
	return e
}

// startEnvAt starts a homeserver and the bridge with one network "test"
// on the IRC server at addr (host:port).
func startEnvAt(t *testing.T, addr string, tune func(*Config), beforeRun func(*env)) *env {
	t.Helper()
	kit := testkit.Start(t)
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	cfg := &Config{
		Config: bridge.Config{Config: *kit.FrameworkConfig("irc")},
		Networks: []NetworkConfig{{
			ID: "test", Name: "Test", Host: host, Port: port, BotNick: "mxbridge",
			// Tests send fast; flood control is ircx's to test.
			RateLimit:      RateLimit{LinesPerSecond: 100, Burst: 50},
			ConnectionRate: ConnectionRate{PerSecond: 50, Burst: 10},
			Reconnect:      Backoff{Min: 100 * time.Millisecond, Max: time.Second},
		}},
	}
	if tune != nil {
		tune(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg, _, err := cfg.EnsureRegistration()
	if err != nil {
		t.Fatal(err)
	}
	kit.RegisterAppservice(reg)
	e := &env{t: t, kit: kit, addr: addr, cfg: cfg, ctx: context.Background(), botCli: kit.ASClient(reg)}
	if beforeRun != nil {
		beforeRun(e)
	}
	e.runBridge()
	t.Cleanup(e.stopBridge)
	return e
}

// runBridge starts the bridge on e's config and waits until it is
// connected to IRC.
func (e *env) runBridge() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	level := zerolog.WarnLevel
	if l, err := zerolog.ParseLevel(os.Getenv("IRC_TEST_LOG")); err == nil && l != zerolog.NoLevel {
		level = l // IRC_TEST_LOG=debug shows what the bridge does
	}
	log := zerolog.New(zerolog.NewTestWriter(e.t)).Level(level)
	br, err := New(ctx, e.cfg, log)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- br.Run(ctx) }()
	e.stop = func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("bridge stopped with %v", err)
		}
	}
	e.br = br
	e.waitState(bridge.StateConnected)
}

// stopBridge stops the bridge (again: nothing).
func (e *env) stopBridge() {
	if e.stop != nil {
		e.stop()
		e.stop = nil
	}
}

func (e *env) waitState(want bridge.StateName) {
	e.t.Helper()
	deadline := time.Now().Add(wait)
	for e.br.Framework.State().Name != want {
		if time.Now().After(deadline) {
			e.t.Fatalf("bridge state is %+v, want %s", e.br.Framework.State(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) ghost(nick string) id.UserID { return e.cfg.GhostID("test_" + strings.ToLower(nick)) }

// ircUser connects a scripted IRC user and joins it to channels.
func (e *env) ircUser(nick string, channels ...string) *ircxtest.Client {
	e.t.Helper()
	cl := ircxtest.Dial(e.t, e.addr, nick)
	for _, ch := range channels {
		cl.Send("JOIN " + ch)
		cl.Expect(wait, func(m *irc.Message) bool { return m.Command == "366" && strings.EqualFold(m.Param(1), ch) })
	}
	return cl
}

// joinPortal makes a Matrix user join a channel's alias.
func (e *env) joinPortal(cli *mautrix.Client, channel string) id.RoomID {
	e.t.Helper()
	resp, err := cli.JoinRoom(e.ctx, "#irc_test_"+channel+":"+e.kit.ServerName, nil)
	if err != nil {
		e.t.Fatalf("%s join %s: %v", cli.UserID, channel, err)
	}
	return resp.RoomID
}

func (e *env) sendText(cli *mautrix.Client, room id.RoomID, text string) id.EventID {
	e.t.Helper()
	resp, err := cli.SendText(e.ctx, room, text)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.EventID
}

func (e *env) sendContent(cli *mautrix.Client, room id.RoomID, content *event.MessageEventContent) id.EventID {
	e.t.Helper()
	resp, err := cli.SendMessageEvent(e.ctx, room, event.EventMessage, content)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.EventID
}

// ircMsg matches a PRIVMSG (or NOTICE) from nick to target, with text
// when text is not "".
func ircMsg(command, from, target, text string) func(*irc.Message) bool {
	return func(m *irc.Message) bool {
		return m.Command == command && m.Prefix != nil && strings.EqualFold(m.Prefix.Name, from) &&
			strings.EqualFold(m.Param(0), target) && (text == "" || m.Trailing() == text)
	}
}

func ircCmd(command, from string, params ...string) func(*irc.Message) bool {
	return func(m *irc.Message) bool {
		if m.Command != command || m.Prefix == nil || !strings.EqualFold(m.Prefix.Name, from) {
			return false
		}
		for i, p := range params {
			if !strings.EqualFold(m.Param(i), p) {
				return false
			}
		}
		return true
	}
}

func from(sender id.UserID, match func(*event.Event) bool) func(*event.Event) bool {
	return func(e *event.Event) bool { return e.Sender == sender && match(e) }
}

func membership(userID id.UserID, m event.Membership) func(*event.Event) bool {
	return func(e *event.Event) bool {
		return e.Type == event.StateMember && e.GetStateKey() == string(userID) && e.Content.AsMember().Membership == m
	}
}

// bodyHas matches a message whose body, markdown marks removed, contains
// text.
func bodyHas(text string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		msg, ok := e.Content.Parsed.(*event.MessageEventContent)
		return e.Type == event.EventMessage && ok && strings.Contains(strings.NewReplacer("`", "", "*", "").Replace(msg.Body), text)
	}
}

func (e *env) displayName(cli *mautrix.Client, room id.RoomID, user id.UserID) string {
	e.t.Helper()
	var m event.MemberEventContent
	if err := cli.StateEvent(e.ctx, room, event.StateMember, string(user), &m); err != nil {
		e.t.Fatalf("member %s: %v", user, err)
	}
	return m.Displayname
}

// eventually polls cond until it holds.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) powerOf(cli *mautrix.Client, room id.RoomID, user id.UserID) int {
	var pl event.PowerLevelsEventContent
	if err := cli.StateEvent(e.ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		e.t.Fatal(err)
	}
	return pl.GetUserLevel(user)
}

// A portal by alias, and what happens in it both ways.
func TestBridge(t *testing.T) {
	e := startEnv(t, func(c *Config) {
		// rita may only be relayed; the other users of the server speak as themselves.
		c.Permissions = map[string]bridge.Permission{c.ServerName: bridge.PermissionUser, "@rita:" + c.ServerName: bridge.PermissionRelay,
			"@adam:" + c.ServerName: bridge.PermissionAdmin}
		c.Relay.Enabled, c.Relay.Default = true, true
		c.Provisioning.SharedSecret = "provisioning-secret-for-tests"
	})
	ctx := e.ctx
	alice := e.kit.NewUser("alice")

	// carol comes first and is the channel operator; bob joins after.
	carol := e.ircUser("carol", "#chan")
	bob := e.ircUser("bob", "#chan")
	room := e.joinPortal(alice, "#chan")

	t.Run("portal by alias", func(t *testing.T) {
		carol.Expect(wait, ircCmd("JOIN", "mxbridge", "#chan"))
		carol.Expect(wait, ircCmd("JOIN", "alice[m]", "#chan"))
		testkit.WaitForJoin(t, alice, room, e.ghost("bob"), wait)
		testkit.WaitForJoin(t, alice, room, e.ghost("carol"), wait)
		var info event.BridgeEventContent
		if err := alice.StateEvent(ctx, room, event.StateBridge, "im.switchboard://irc/test/#chan", &info); err != nil ||
			info.Protocol.ID != "irc" || info.Channel.ID != "test/#chan" {
			t.Errorf("m.bridge = %+v, %v", info, err)
		}
		e.eventually("carol (channel operator) at power 50", func() bool { return e.powerOf(alice, room, e.ghost("carol")) == 50 })
	})

	t.Run("IRC message from the ghost", func(t *testing.T) {
		bob.Send("PRIVMSG #chan :hello from irc")
		evt := testkit.WaitForEvent(t, alice, room, testkit.HasBody("hello from irc"), wait)
		if evt.Sender != e.ghost("bob") {
			t.Errorf("sender %s, want %s", evt.Sender, e.ghost("bob"))
		}
		if name := e.displayName(alice, room, e.ghost("bob")); name != "bob" {
			t.Errorf("bob's ghost is named %q", name)
		}
	})

	var hiID id.EventID
	t.Run("Matrix message from the puppet", func(t *testing.T) {
		hiID = e.sendText(alice, room, "hi bob")
		bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#chan", "hi bob"))
	})

	t.Run("emotes", func(t *testing.T) {
		bob.Send("PRIVMSG #chan :\x01ACTION waves\x01")
		testkit.WaitForEvent(t, alice, room, from(e.ghost("bob"), func(ev *event.Event) bool {
			c := ev.Content.AsMessage()
			return c.MsgType == event.MsgEmote && c.Body == "waves"
		}), wait)
		e.sendContent(alice, room, &event.MessageEventContent{MsgType: event.MsgEmote, Body: "dances"})
		bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#chan", "\x01ACTION dances\x01"))
	})

	t.Run("formatting", func(t *testing.T) {
		bob.Send("PRIVMSG #chan :\x02bold\x02 move")
		evt := testkit.WaitForEvent(t, alice, room, testkit.HasBody("bold move"), wait)
		if c := evt.Content.AsMessage(); c.Format != event.FormatHTML || !strings.Contains(c.FormattedBody, "<strong>bold</strong>") {
			t.Errorf("formatted_body %q (%s)", c.FormattedBody, c.Format)
		}
		e.sendContent(alice, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "strong words",
			Format: event.FormatHTML, FormattedBody: "<strong>strong</strong> words"})
		bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#chan", "\x02strong\x02 words"))
	})

	t.Run("long UTF-8 message split", func(t *testing.T) {
		long := strings.TrimSpace(strings.Repeat("Grüße aus Köln, schönes Wetter heute — ", 30)) // ~1.2 kB
		e.sendText(alice, room, long)
		var got strings.Builder
		lines := 0
		for got.Len() < len(long) {
			m := bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#chan", ""))
			got.WriteString(m.Trailing())
			lines++
		}
		if got.String() != long || lines < 2 {
			t.Errorf("got %d lines joining to %q, want the message split over several", lines, got.String())
		}
	})

	t.Run("many lines cut with a link", func(t *testing.T) {
		var lines []string
		for i := 1; i <= 8; i++ {
			lines = append(lines, fmt.Sprintf("line %d", i))
		}
		evtID := e.sendText(alice, room, strings.Join(lines, "\n"))
		for i := 1; i <= 4; i++ {
			bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#chan", fmt.Sprintf("line %d", i)))
		}
		m := bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#chan", ""))
		if !strings.HasPrefix(m.Trailing(), "(full message: https://matrix.to/#/") || !strings.Contains(m.Trailing(), strings.TrimPrefix(string(evtID), "$")) {
			t.Errorf("5th line %q, want a link to %s", m.Trailing(), evtID)
		}
	})

	t.Run("reply and edit", func(t *testing.T) {
		bob.Send("PRIVMSG #chan :question?")
		q := testkit.WaitForEvent(t, alice, room, testkit.HasBody("question?"), wait)
		reply := &event.MessageEventContent{MsgType: event.MsgText, Body: "answer"}
		reply.SetReply(q)
		e.sendContent(alice, room, reply)
		bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#chan", "bob: answer"))

		edit := &event.MessageEventContent{MsgType: event.MsgText, Body: "* hi bob!"}
		edit.SetEdit(hiID)
		edit.NewContent = &event.MessageEventContent{MsgType: event.MsgText, Body: "hi bob!"}
		e.sendContent(alice, room, edit)
		bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#chan", "* hi bob!"))
	})

	t.Run("file as a link", func(t *testing.T) {
		up, err := alice.UploadBytesWithName(ctx, []byte("some notes"), "text/plain", "notes.txt")
		if err != nil {
			t.Fatal(err)
		}
		e.sendContent(alice, room, &event.MessageEventContent{MsgType: event.MsgFile, Body: "notes.txt", URL: up.ContentURI.CUString()})
		want := fmt.Sprintf("notes.txt <%s/_matrix/client/v1/media/download/%s/%s/notes.txt>", e.kit.URL, up.ContentURI.Homeserver, up.ContentURI.FileID)
		bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#chan", want))
	})

	t.Run("relayed user", func(t *testing.T) {
		rita := e.kit.NewUser("rita")
		if err := rita.SetDisplayName(ctx, "Rita"); err != nil {
			t.Fatal(err)
		}
		e.joinPortal(rita, "#chan")
		e.sendText(rita, room, "hello from rita")
		bob.Expect(wait, ircMsg("PRIVMSG", "mxbridge", "#chan", "Rita: hello from rita"))
	})

	t.Run("message the server refuses", func(t *testing.T) {
		carol.Send("MODE #chan +m")
		carol.Expect(wait, ircCmd("MODE", "carol", "#chan", "+m"))
		muted := e.sendText(alice, room, "can anyone hear me")
		refusal := testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("Not delivered to #chan: the IRC server refused it")), wait)
		if got := refusal.Content.AsMessage().RelatesTo.GetReplyTo(); got != muted {
			t.Errorf("the refusal replies to %s, want %s", got, muted)
		}
		carol.Send("MODE #chan -m")
		carol.Expect(wait, ircCmd("MODE", "carol", "#chan", "-m"))
	})

	t.Run("topic", func(t *testing.T) {
		carol.Send("TOPIC #chan :the \x02new\x02 topic")
		e.eventually("the room topic", func() bool {
			var topic event.TopicEventContent
			return alice.StateEvent(ctx, room, event.StateTopic, "", &topic) == nil && topic.Topic == "the new topic"
		})
	})

	t.Run("op is power 50", func(t *testing.T) {
		carol.Send("MODE #chan +o bob")
		e.eventually("bob's ghost at power 50", func() bool { return e.powerOf(alice, room, e.ghost("bob")) == 50 })
	})

	t.Run("nick change", func(t *testing.T) {
		bob.Send("NICK bobby")
		leave := testkit.WaitForEvent(t, alice, room, membership(e.ghost("bob"), event.MembershipLeave), wait)
		if reason := leave.Content.AsMember().Reason; reason != "changed nick to bobby" {
			t.Errorf("leave reason %q", reason)
		}
		testkit.WaitForJoin(t, alice, room, e.ghost("bobby"), wait)
		e.eventually("bobby's ghost at power 50 and bob's gone", func() bool {
			return e.powerOf(alice, room, e.ghost("bobby")) == 50 && e.powerOf(alice, room, e.ghost("bob")) == 0
		})
		members, err := alice.JoinedMembers(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		if _, left := members.Joined[e.ghost("bob")]; left {
			t.Errorf("bob's ghost is still in the room")
		}
		bob.Send("PRIVMSG #chan :renamed")
		if evt := testkit.WaitForEvent(t, alice, room, testkit.HasBody("renamed"), wait); evt.Sender != e.ghost("bobby") {
			t.Errorf("after the nick change messages come from %s", evt.Sender)
		}
	})

	t.Run("kick of a puppet", func(t *testing.T) {
		carol.Send("KICK #chan alice[m] :behave")
		// alice cannot see her own kick in the timeline any more; the bot can.
		kick := testkit.WaitForEvent(t, e.botCli, room, membership(alice.UserID, event.MembershipLeave), wait)
		if !strings.Contains(kick.Content.AsMember().Reason, "behave") || kick.Sender == alice.UserID {
			t.Errorf("alice left with %q by %s, want a kick saying behave", kick.Content.AsMember().Reason, kick.Sender)
		}
		// She comes back: her puppet rejoins.
		e.joinPortal(alice, "#chan")
		carol.Expect(wait, ircCmd("JOIN", "alice[m]", "#chan"))
	})

	t.Run("part and quit", func(t *testing.T) {
		dave := e.ircUser("dave", "#chan")
		testkit.WaitForJoin(t, alice, room, e.ghost("dave"), wait)
		dave.Send("QUIT :bye now")
		quit := testkit.WaitForEvent(t, alice, room, membership(e.ghost("dave"), event.MembershipLeave), wait)
		// ngircd quotes quit messages.
		if r := quit.Content.AsMember().Reason; !strings.HasPrefix(r, "Quit: ") || !strings.Contains(r, "bye now") {
			t.Errorf("quit reason %q", r)
		}
		bob.Send("PART #chan :later")
		part := testkit.WaitForEvent(t, alice, room, membership(e.ghost("bobby"), event.MembershipLeave), wait)
		if r := part.Content.AsMember().Reason; r != "Left the channel: later" {
			t.Errorf("part reason %q", r)
		}
	})

	t.Run("private message is a direct chat", func(t *testing.T) {
		erin := e.ircUser("erin")
		erin.Send("PRIVMSG alice[m] :psst")
		dm := e.acceptDirectChat(alice, e.ghost("erin"))
		testkit.WaitForEvent(t, alice, dm, from(e.ghost("erin"), testkit.HasBody("psst")), wait)
		e.sendText(alice, dm, "hello erin")
		erin.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "erin", "hello erin"))
	})

	t.Run("link command", func(t *testing.T) {
		frank := e.ircUser("frank", "#other")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Other", Invite: []id.UserID{e.cfg.BotID()}})
		if err != nil {
			t.Fatal(err)
		}
		other := created.RoomID
		testkit.WaitForJoin(t, alice, other, e.cfg.BotID(), wait)
		// alice is no operator of #other: frank, its first member, is.
		e.sendText(alice, other, "!irc link test #other")
		testkit.WaitForEvent(t, alice, other, from(e.cfg.BotID(), bodyHas("only an operator of #other, or a bridge admin, may bridge it")), wait)
		testkit.WaitForEvent(t, alice, other, from(e.cfg.BotID(), bodyHas("operators: frank")), wait)
		e.sendText(alice, other, "!irc link test #other frank")
		frank.Expect(wait, ircMsg("PRIVMSG", "mxbridge", "frank", ""))
		testkit.WaitForEvent(t, alice, other, from(e.cfg.BotID(), bodyHas("asked frank, an operator of #other")), wait)
		frank.Send("PRIVMSG mxbridge :yes")
		frank.Expect(wait, ircCmd("JOIN", "mxbridge", "#other"))
		testkit.WaitForJoin(t, alice, other, e.ghost("frank"), wait)
		frank.Send("PRIVMSG #other :hi from #other")
		testkit.WaitForEvent(t, alice, other, from(e.ghost("frank"), testkit.HasBody("hi from #other")), wait)
		e.sendText(alice, other, "hi frank")
		frank.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#other", "hi frank"))

		e.sendText(alice, other, "!irc unlink")
		frank.Expect(wait, ircCmd("PART", "alice[m]", "#other"))
		frank.Expect(wait, ircCmd("PART", "mxbridge", "#other"))
		testkit.WaitForEvent(t, alice, other, membership(e.ghost("frank"), event.MembershipLeave), wait)
	})

	t.Run("provisioning link", func(t *testing.T) {
		gina := e.ircUser("gina", "#prov")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Prov", Invite: []id.UserID{e.cfg.BotID()}})
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf(`{"room_id": %q, "channel": "test/#prov"}`, created.RoomID)
		provision := func(user id.UserID) (int, map[string]any) {
			req, _ := http.NewRequest("POST", e.cfg.URL+"/_switchboard/provision/v1/link?user_id="+string(user), bytes.NewBufferString(body))
			req.Header.Set("Authorization", "Bearer "+e.cfg.Provisioning.SharedSecret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&out)
			return resp.StatusCode, out
		}
		// Not an operator of #prov: refused. A bridge admin may.
		if status, out := provision(alice.UserID); status != http.StatusForbidden || !strings.Contains(fmt.Sprint(out["error"]), "`gina`") {
			t.Fatalf("provisioning link by a non-operator: %d %v", status, out)
		}
		adam := e.kit.NewUser("adam")
		if _, err := alice.SendStateEvent(ctx, created.RoomID, event.StatePowerLevels, "", map[string]any{
			"users": map[string]int{string(adam.UserID): 50, string(e.cfg.BotID()): 50},
		}); err != nil {
			t.Fatal(err)
		}
		// Once the bridge has seen adam's power level.
		e.eventually("the provisioning link by an admin", func() bool {
			status, out := provision(adam.UserID)
			if status != 200 && !strings.Contains(fmt.Sprint(out["error"]), "power level") {
				t.Fatalf("provisioning link by an admin: %d %v", status, out)
			}
			return status == 200
		})
		gina.Expect(wait, ircCmd("JOIN", "mxbridge", "#prov"))
		testkit.WaitForJoin(t, alice, created.RoomID, e.ghost("gina"), wait)
	})

	t.Run("nick taken", func(t *testing.T) {
		squatter := e.ircUser("squatter") // ircxtest's USER cannot carry brackets
		squatter.Send("NICK zed[m]")
		squatter.Expect(wait, ircCmd("NICK", "squatter", "zed[m]"))
		zed := e.kit.NewUser("zed")
		e.joinPortal(zed, "#chan")
		m := carol.Expect(wait, func(m *irc.Message) bool {
			return m.Command == "JOIN" && m.Prefix != nil && strings.HasPrefix(m.Prefix.Name, "zed[m]")
		})
		if m.Prefix.Name == "zed[m]" {
			t.Fatalf("zed's puppet took the nick of an IRC user")
		}
		e.sendText(zed, room, "!irc nick")
		testkit.WaitForEvent(t, zed, room, from(e.cfg.BotID(), bodyHas("Test: you are "+m.Prefix.Name)), wait)
	})

	t.Run("commands", func(t *testing.T) {
		e.sendText(alice, room, "!irc whois carol")
		testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("carol is carol!")), wait)
		e.sendText(alice, room, "!irc networks")
		testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("Test (test, "+e.srv.Addr+"): connected as mxbridge")), wait)
		e.sendText(alice, room, "!irc nick alice2")
		carol.Expect(wait, ircCmd("NICK", "alice[m]", "alice2"))
		testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("You are now alice2 on Test.")), wait)
		e.sendText(alice, room, "as alice2")
		carol.Expect(wait, ircMsg("PRIVMSG", "alice2", "#chan", "as alice2"))
	})

	t.Run("no echo of the bridge's own", func(t *testing.T) {
		members, err := alice.JoinedMembers(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		for u := range members.Joined {
			for _, puppetNick := range []string{"alice", "zed", "mxbridge"} {
				if strings.HasPrefix(string(u), "@irc_test__"+puppetNick) {
					t.Errorf("%s, a ghost of the bridge's own connection, is in the room", u)
				}
			}
		}
		resp, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 1000)
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for _, evt := range resp.Chunk {
			if evt.Type == event.EventMessage && evt.Content.Raw["body"] == "hi bob" {
				count++
			}
		}
		if count != 1 {
			t.Errorf("\"hi bob\" is in the room %d times, want once", count)
		}
	})

	t.Run("kick of the bot", func(t *testing.T) {
		e.br.core.rejoinDelay.Store(int64(200 * time.Millisecond))
		carol.Send("KICK #chan mxbridge :out")
		testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("carol kicked the bridge from #chan on IRC (out)")), wait)
		carol.Expect(wait, ircCmd("JOIN", "mxbridge", "#chan"))
		carol.Send("PRIVMSG #chan :are you back")
		testkit.WaitForEvent(t, alice, room, from(e.ghost("carol"), testkit.HasBody("are you back")), wait)
	})
}

// The IRC server goes away and comes back: the room is told both times, a
// message sent meanwhile is reported as not delivered, and the bot and
// the puppets come back on their own.
func TestReconnect(t *testing.T) {
	e := startEnv(t, nil)
	alice := e.kit.NewUser("alice")
	bob := e.ircUser("bob", "#r")
	room := e.joinPortal(alice, "#r")
	bob.Expect(wait, ircCmd("JOIN", "alice[m]", "#r"))
	e.sendText(alice, room, "before")
	bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#r", "before"))

	e.srv.Stop()
	testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("The bridge lost its connection to the IRC network Test")), wait)
	e.waitState(bridge.StateTransientDisconnect)
	lost := e.sendText(alice, room, "while down")
	notDelivered := testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("Not delivered to IRC")), wait)
	if got := notDelivered.Content.AsMessage().RelatesTo.GetReplyTo(); got != lost {
		t.Errorf("the failure notice replies to %s, want %s", got, lost)
	}

	e.srv.Start()
	testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("The bridge is connected to the IRC network Test again")), wait)
	e.waitState(bridge.StateConnected)
	bob = e.ircUser("bob", "#r")
	e.eventually("alice's puppet back in #r", func() bool {
		bob.Send("NAMES #r")
		m, err := bob.Next(time.Second, func(m *irc.Message) bool { return m.Command == "353" })
		return err == nil && strings.Contains(m.Trailing(), "alice[m]")
	})
	e.sendText(alice, room, "after")
	bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#r", "after"))
	bob.Send("PRIVMSG #r :welcome back")
	testkit.WaitForEvent(t, alice, room, from(e.ghost("bob"), testkit.HasBody("welcome back")), wait)
}

// A puppet quits after the idle timeout and comes back with the next
// message.
func TestIdlePuppetReaped(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Networks[0].IdleTimeout = time.Second })
	alice := e.kit.NewUser("alice")
	bob := e.ircUser("bob", "#idle")
	room := e.joinPortal(alice, "#idle")
	bob.Expect(wait, ircCmd("JOIN", "alice[m]", "#idle"))
	e.sendText(alice, room, "hi")
	bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#idle", "hi"))
	start := time.Now()
	bob.Expect(wait, ircCmd("QUIT", "alice[m]"))
	if idle := time.Since(start); idle < 900*time.Millisecond {
		t.Errorf("the puppet quit after %s idle, before the idle timeout", idle)
	}
	e.sendText(alice, room, "back again")
	bob.Expect(wait, ircCmd("JOIN", "alice[m]", "#idle"))
	bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#idle", "back again"))
}

// Configured channels get their rooms at start; mapped channels are linked
// to existing rooms.
func TestConfiguredChannels(t *testing.T) {
	var alice *mautrix.Client
	var mapped id.RoomID
	e := startEnvWith(t, func(c *Config) { c.Networks[0].Channels = []string{"#auto"} }, func(e *env) {
		alice = e.kit.NewUser("alice")
		created, err := alice.CreateRoom(e.ctx, &mautrix.ReqCreateRoom{Name: "Mapped", Invite: []id.UserID{e.cfg.BotID()}})
		if err != nil {
			t.Fatal(err)
		}
		mapped = created.RoomID
		e.cfg.Networks[0].Mappings = map[string]ChannelMapping{"#mapped": {Room: mapped}}
	})
	ian := e.ircUser("ian", "#auto", "#mapped")
	testkit.WaitForJoin(t, alice, mapped, e.cfg.BotID(), wait)
	testkit.WaitForJoin(t, alice, mapped, e.ghost("ian"), wait)
	ian.Send("PRIVMSG #mapped :in the mapped room")
	testkit.WaitForEvent(t, alice, mapped, from(e.ghost("ian"), testkit.HasBody("in the mapped room")), wait)

	// #auto's room exists before any Matrix user asked: its alias resolves.
	var auto id.RoomID
	e.eventually("the room of #auto", func() bool {
		resp, err := alice.ResolveAlias(e.ctx, id.RoomAlias("#irc_test_#auto:"+e.kit.ServerName))
		if err == nil {
			auto = resp.RoomID
		}
		return err == nil
	})
	if _, err := alice.JoinRoomByID(e.ctx, auto); err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, auto, e.ghost("ian"), wait)
	ian.Send("PRIVMSG #auto :automatic")
	testkit.WaitForEvent(t, alice, auto, from(e.ghost("ian"), testkit.HasBody("automatic")), wait)
}
