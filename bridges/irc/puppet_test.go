package irc

import (
	"os"
	"strings"
	"testing"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

// A puppet's own connection: its nick given back when the holder leaves,
// a stored password used with NickServ where the network has no SASL
// (ngircd has none; SASL itself is in TestInspIRCd), raw commands.
func TestPuppetConnection(t *testing.T) {
	e := startEnv(t, func(c *Config) {
		c.Permissions = map[string]bridge.Permission{c.ServerName: bridge.PermissionUser}
	})
	ctx := e.ctx
	carol := e.ircUser("carol", "#puppets")

	t.Run("nick reclaimed when the holder quits", func(t *testing.T) {
		squatter := e.ircUser("squatter", "#puppets")
		squatter.Send("NICK una[m]")
		squatter.Expect(wait, ircCmd("NICK", "squatter", "una[m]"))
		una := e.kit.NewUser("una")
		room := e.joinPortal(una, "#puppets")
		m := carol.Expect(wait, func(m *irc.Message) bool {
			return m.Command == "JOIN" && m.Prefix != nil && strings.HasPrefix(m.Prefix.Name, "una[m]")
		})
		if m.Prefix.Name == "una[m]" {
			t.Fatal("una's puppet took the nick of an IRC user")
		}
		squatter.Send("QUIT :bye")
		carol.Expect(wait, ircCmd("NICK", m.Prefix.Name, "una[m]"))
		e.sendText(una, room, "back to my nick")
		carol.Expect(wait, ircMsg("PRIVMSG", "una[m]", "#puppets", "back to my nick"))
	})

	vic := e.kit.NewUser("vic")
	room := e.joinPortal(vic, "#puppets")
	carol.Expect(wait, ircCmd("JOIN", "vic[m]", "#puppets"))
	dm := managementRoom(t, e, vic)

	t.Run("storepass outside the management room", func(t *testing.T) {
		evt := e.sendText(vic, room, "!irc storepass hunter2")
		testkit.WaitForEvent(t, vic, room, from(e.cfg.BotID(), bodyHas("Not stored: send storepass in your management room")), wait)
		waitRedacted(t, e, vic, room, evt)
	})

	t.Run("storepass and NickServ IDENTIFY", func(t *testing.T) {
		// ngircd has no services: a scripted NickServ receives the
		// IDENTIFY. It cannot make the server send 900 (logged in), so the
		// bridge says the login is not confirmed.
		e.br.core.identifyWait.Store(int64(time.Second))
		nickserv := e.ircUser("NickServ")
		evt := e.sendText(vic, dm, "!irc storepass vicaccount \"correct horse\"")
		nickserv.Expect(wait, ircMsg("PRIVMSG", "vic[m]", "NickServ", "IDENTIFY vicaccount correct horse"))
		testkit.WaitForEvent(t, vic, dm, from(e.cfg.BotID(), bodyHas("Stored your password for the account vicaccount on Test")), wait)
		testkit.WaitForEvent(t, vic, dm, from(e.cfg.BotID(), bodyHas("did not confirm a login")), wait)
		waitRedacted(t, e, vic, dm, evt)
		if fi, err := os.Stat(e.cfg.passwordKeyPath()); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("password key file: %v, %v", fi, err)
		}
		// Sealed at rest: the database does not hold the password.
		var raw string
		if err := e.br.Framework.DB.QueryRow(ctx, `SELECT value FROM framework_kv WHERE scope = $1 AND key = 'irc/test/credentials'`,
			"user:"+string(vic.UserID)).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(raw, "horse") || !strings.Contains(raw, "vicaccount") {
			t.Errorf("stored credentials %s", raw)
		}

		// The next connection identifies as it registers.
		e.sendText(vic, room, "!irc cmd QUIT")
		testkit.WaitForEvent(t, vic, room, from(e.cfg.BotID(), bodyHas("QUIT is the bridge's to send")), wait)
		p := e.br.core.networks["test"].existingPuppet(vic.UserID)
		p.conn.Load().Close()
		nickserv.Expect(wait, ircMsg("PRIVMSG", "vic[m]", "NickServ", "IDENTIFY vicaccount correct horse"))

		e.sendText(vic, dm, "!irc removepass")
		testkit.WaitForEvent(t, vic, dm, from(e.cfg.BotID(), bodyHas("Your stored password for Test is forgotten")), wait)
	})

	t.Run("metrics", func(t *testing.T) {
		text := testkit.Scrape(t, e.cfg.URL+"/metrics")
		// Labels as the text format sorts them.
		series := func(name, kind, outcome string) float64 {
			labels := `appservice="irc",`
			if kind != "" {
				labels += `kind="` + kind + `",`
			}
			labels += `network="test"`
			if outcome != "" {
				labels += `,outcome="` + outcome + `"`
			}
			return testkit.MetricValue(text, "switchboard_irc_"+name+"{"+labels+"}")
		}
		if got := series("connections", "puppet", ""); got != 2 {
			t.Errorf("puppet connections = %v, want 2 (una and vic)\n%s", got, text)
		}
		if series("network_up", "", "") != 1 || series("connections", "bot", "") != 1 {
			t.Errorf("network not shown up:\n%s", text)
		}
		// una once; vic at join and again after its connection was closed.
		if got := series("connects_total", "puppet", "ok"); got < 3 {
			t.Errorf("puppet connects = %v\n%s", got, text)
		}
		if got := series("disconnects_total", "puppet", ""); got < 1 {
			t.Errorf("puppet disconnects = %v", got)
		}
		if !strings.Contains(text, "switchboard_irc_lag_seconds{") || !strings.Contains(text, "switchboard_irc_send_queue_longest_lines{") {
			t.Errorf("lag or queue metrics missing:\n%s", text)
		}
	})

	t.Run("reaction without IRCv3, as an action", func(t *testing.T) {
		carol.Send("PRIVMSG #puppets :react to this please, it is a long enough line to be cut short")
		evt := testkit.WaitForEvent(t, vic, room, from(e.ghost("carol"), bodyHas("react to this please")), wait)
		if _, err := vic.SendReaction(ctx, room, evt.ID, "👍"); err != nil {
			t.Fatal(err)
		}
		carol.Expect(wait, ircMsg("PRIVMSG", "vic[m]", "#puppets",
			"\x01ACTION reacted 👍 to carol: “react to this please, it is a long enough line to be cut sho…”\x01"))
	})

	t.Run("raw command", func(t *testing.T) {
		e.sendText(vic, room, "!irc cmd WHOIS carol")
		testkit.WaitForEvent(t, vic, room, from(e.cfg.BotID(), bodyHas("311 carol ~carol 127.0.0.1")), wait)
		e.sendText(vic, room, "!irc cmd PRIVMSG carol :psst")
		carol.Expect(wait, ircMsg("PRIVMSG", "vic[m]", "carol", "psst"))
	})
}

// managementRoom opens a direct chat with the bridge bot, which becomes
// the user's management room.
func managementRoom(t *testing.T, e *env, cli *mautrix.Client) id.RoomID {
	t.Helper()
	dm, err := cli.CreateRoom(e.ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{e.cfg.BotID()}, IsDirect: true, Preset: "trusted_private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForEvent(t, cli, dm.RoomID, from(e.cfg.BotID(), bodyHas("Hello!")), wait)
	return dm.RoomID
}

// waitRedacted waits until evt is redacted (its content gone).
func waitRedacted(t *testing.T, e *env, cli *mautrix.Client, room id.RoomID, evt id.EventID) {
	t.Helper()
	e.eventually("the redaction of "+string(evt), func() bool {
		got, err := cli.GetEvent(e.ctx, room, evt)
		if err != nil {
			return false
		}
		return got.Unsigned.RedactedBecause != nil || len(got.Content.Raw) == 0
	})
}

// With identd on, ngircd (which asks ident as a client connects, when its
// DNS lookups are on too) shows
// each puppet's own ident, without the "~" of an unverified one.
func TestPuppetIdent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("identd needs port 113, which only root may bind")
	}
	e := startEnvOn(t, &ircxtest.Options{ExtraOptions: "\tDNS = yes\n\tIdent = yes\n"}, func(c *Config) {
		c.Identd = IdentdConfig{Enabled: true, Listen: "127.0.0.1:113"}
	}, nil)
	carol := e.ircUser("carol", "#ident")
	wes := e.kit.NewUser("wes")
	e.joinPortal(wes, "#ident")
	carol.Expect(wait, ircCmd("JOIN", "wes[m]", "#ident"))
	carol.Send("WHOIS wes[m]")
	m := carol.Expect(wait, func(m *irc.Message) bool { return m.Command == "311" })
	if m.Param(2) != "wes" {
		t.Errorf("wes's puppet shows the ident %q, want wes (verified by identd)", m.Param(2))
	}
	carol.Send("WHOIS mxbridge")
	m = carol.Expect(wait, func(m *irc.Message) bool { return m.Command == "311" })
	if m.Param(2) != "mxbridge" {
		t.Errorf("the bot shows the ident %q, want mxbridge", m.Param(2))
	}
}

// Element's "Start chat" with an IRC user's ghost: the room becomes the
// private conversation with them, both ways, under their next nick too.
func TestDirectChatFromMatrix(t *testing.T) {
	e := startEnv(t, func(c *Config) {
		c.Permissions = map[string]bridge.Permission{c.ServerName: bridge.PermissionUser}
	})
	bob := e.ircUser("Bob", "#dm")
	alice := e.kit.NewUser("alice")
	e.joinPortal(alice, "#dm") // where alice sees Bob
	bob.Expect(wait, ircCmd("JOIN", "alice[m]", "#dm"))
	dm, err := alice.CreateRoom(e.ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{e.ghost("bob")}, IsDirect: true, Preset: "trusted_private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, dm.RoomID, e.ghost("bob"), wait)
	testkit.WaitForJoin(t, alice, dm.RoomID, e.cfg.BotID(), wait)
	if name := e.displayName(alice, dm.RoomID, e.ghost("bob")); name != "Bob" {
		t.Errorf("the ghost is named %q, want Bob", name)
	}
	e.sendText(alice, dm.RoomID, "hi Bob, privately")
	bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "Bob", "hi Bob, privately"))
	bob.Send("PRIVMSG alice[m] :hello back")
	testkit.WaitForEvent(t, alice, dm.RoomID, from(e.ghost("bob"), testkit.HasBody("hello back")), wait)
	// It follows Bob's nick change (dm_test.go has the details).
	bob.Send("NICK Bobby")
	testkit.WaitForJoin(t, alice, dm.RoomID, e.ghost("bobby"), wait)
	e.sendText(alice, dm.RoomID, "still there?")
	bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "bobby", "still there?"))
	bob.Send("PRIVMSG alice[m] :as Bobby")
	testkit.WaitForEvent(t, alice, dm.RoomID, from(e.ghost("bobby"), testkit.HasBody("as Bobby")), wait)

	// A ghost of no valid nick refuses the invite.
	bad := id.NewUserID(e.cfg.GhostPrefix+"test_1nvalid", e.kit.ServerName)
	room, err := alice.CreateRoom(e.ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bad}, IsDirect: true, Preset: "trusted_private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForEvent(t, alice, room.RoomID, membership(bad, event.MembershipLeave), wait)
}

// A channel over lazy_members_over: only its operators' ghosts join at
// once; the others join when they speak, and leave when they go.
func TestLazyMembers(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Networks[0].LazyMembersOver = 3 })
	op := e.ircUser("op", "#big") // first in: operator
	var quiet []*ircxtest.Client
	for _, nick := range []string{"q1", "q2", "q3", "q4"} {
		quiet = append(quiet, e.ircUser(nick, "#big"))
	}
	alice := e.kit.NewUser("alice")
	room := e.joinPortal(alice, "#big")
	op.Expect(wait, ircCmd("JOIN", "alice[m]", "#big"))
	testkit.WaitForJoin(t, alice, room, e.ghost("op"), wait)

	quiet[1].Send("PRIVMSG #big :I speak")
	testkit.WaitForEvent(t, alice, room, from(e.ghost("q2"), testkit.HasBody("I speak")), wait)
	late := e.ircUser("late", "#big")
	late.Send("PRIVMSG #big :and I")
	testkit.WaitForEvent(t, alice, room, from(e.ghost("late"), testkit.HasBody("and I")), wait)
	quiet[1].Send("PART #big")
	testkit.WaitForEvent(t, alice, room, membership(e.ghost("q2"), event.MembershipLeave), wait)

	members, err := alice.JoinedMembers(e.ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	for _, nick := range []string{"q1", "q3", "q4", "q2"} {
		if _, in := members.Joined[e.ghost(nick)]; in {
			t.Errorf("%s's ghost is in the room without having spoken", nick)
		}
	}
	for _, nick := range []string{"op", "late"} {
		if _, in := members.Joined[e.ghost(nick)]; !in {
			t.Errorf("%s's ghost is not in the room", nick)
		}
	}
}

// After a bridge restart, the puppets of the users in portal rooms come
// back by themselves, not only when their users speak.
func TestRestartRestoresPuppets(t *testing.T) {
	e := startEnv(t, nil)
	carol := e.ircUser("carol", "#keep")
	xena := e.kit.NewUser("xena")
	e.joinPortal(xena, "#keep")
	carol.Expect(wait, ircCmd("JOIN", "xena[m]", "#keep"))
	e.stopBridge()
	carol.Expect(wait, ircCmd("QUIT", "xena[m]"))
	e.runBridge()
	carol.Expect(wait, ircCmd("JOIN", "xena[m]", "#keep"))
}
