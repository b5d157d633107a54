package irc

import (
	"strings"
	"testing"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

// The bridge on an IRCv3 network, InspIRCd 3 with Atheme services: a
// Matrix user's stored password logs their puppet in with SASL; replies
// and reactions travel as +draft/reply and +draft/react on the messages'
// msgids, both ways.
func TestInspIRCd(t *testing.T) {
	srv := ircxtest.StartInspIRCd(t, nil)
	srv.RegisterAccount(t, "aliceacct", "alice-pass")
	e := startEnvAt(t, srv.Addr, func(c *Config) {
		c.Permissions = map[string]bridge.Permission{c.ServerName: bridge.PermissionUser}
	}, nil)
	ctx := e.ctx
	bob := e.ircUser("bob", "#v3")
	// bob's client speaks IRCv3 too: client tags and account tags.
	bob.Send("CAP REQ :message-tags account-tag server-time echo-message")
	bob.Expect(wait, func(m *irc.Message) bool { return m.Command == "CAP" && m.Param(1) == "ACK" })

	alice := e.kit.NewUser("alice")
	dm := managementRoom(t, e, alice)
	e.sendText(alice, dm, "!irc storepass aliceacct alice-pass")
	testkit.WaitForEvent(t, alice, dm, from(e.cfg.BotID(), bodyHas("Stored your password for the account aliceacct")), wait)
	room := e.joinPortal(alice, "#v3")
	bob.Expect(wait, ircCmd("JOIN", "alice[m]", "#v3"))

	var aliceEvent string
	var aliceMsgID string
	t.Run("SASL login of the puppet", func(t *testing.T) {
		aliceEvent = string(e.sendText(alice, room, "hello from a logged-in puppet"))
		m := bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#v3", "hello from a logged-in puppet"))
		if acct, _ := m.Tags.GetTag("account"); acct != "aliceacct" {
			t.Errorf("alice's message carries account %q, want aliceacct (SASL)", acct)
		}
		aliceMsgID, _ = m.Tags.GetTag("msgid")
		if aliceMsgID == "" {
			t.Fatal("no msgid on alice's message")
		}
	})

	t.Run("IRC reply to a Matrix message", func(t *testing.T) {
		bob.Sendf("@+draft/reply=%s PRIVMSG #v3 :a threaded answer", aliceMsgID)
		evt := testkit.WaitForEvent(t, alice, room, from(e.ghost("bob"), testkit.HasBody("a threaded answer")), wait)
		if got := evt.Content.AsMessage().RelatesTo.GetReplyTo(); string(got) != aliceEvent {
			t.Errorf("bob's answer replies to %q, want alice's %s", got, aliceEvent)
		}
	})

	t.Run("IRC reaction to a Matrix message", func(t *testing.T) {
		bob.Sendf("@+draft/react=👍;+draft/reply=%s TAGMSG #v3", aliceMsgID)
		evt := testkit.WaitForEvent(t, alice, room, func(evt *event.Event) bool { return evt.Type == event.EventReaction }, wait)
		rel := evt.Content.AsReaction().RelatesTo
		if evt.Sender != e.ghost("bob") || string(rel.EventID) != aliceEvent || rel.Key != "👍" {
			t.Errorf("reaction %s on %s by %s, want 👍 on %s by bob's ghost", rel.Key, rel.EventID, evt.Sender, aliceEvent)
		}
	})

	t.Run("Matrix reply and reaction to an IRC message", func(t *testing.T) {
		bob.Send("PRIVMSG #v3 :a question from IRC")
		echo := bob.Expect(wait, ircMsg("PRIVMSG", "bob", "#v3", "a question from IRC"))
		qid, _ := echo.Tags.GetTag("msgid")
		q := testkit.WaitForEvent(t, alice, room, from(e.ghost("bob"), testkit.HasBody("a question from IRC")), wait)
		reply := &event.MessageEventContent{MsgType: event.MsgText, Body: "the answer"}
		reply.SetReply(q)
		e.sendContent(alice, room, reply)
		m := bob.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "#v3", "bob: the answer"))
		if to, _ := m.Tags.GetTag("+draft/reply"); qid == "" || to != qid {
			t.Errorf("alice's reply carries +draft/reply=%q, want the question's msgid %q", to, qid)
		}
		if _, err := alice.SendReaction(ctx, room, q.ID, "🎉"); err != nil {
			t.Fatal(err)
		}
		r := bob.Expect(wait, func(m *irc.Message) bool {
			return m.Command == "TAGMSG" && m.Prefix != nil && m.Prefix.Name == "alice[m]"
		})
		key, _ := r.Tags.GetTag("+draft/react")
		to, _ := r.Tags.GetTag("+draft/reply")
		if key != "🎉" || to != qid {
			t.Errorf("TAGMSG +draft/react=%q +draft/reply=%q, want 🎉 on %q", key, to, qid)
		}
	})

	t.Run("raw command answered by label", func(t *testing.T) {
		e.sendText(alice, room, "!irc cmd WHOIS bob")
		evt := testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("318 bob")), wait)
		if body := evt.Content.AsMessage().Body; !strings.Contains(body, "311 bob") {
			t.Errorf("WHOIS answer %q lacks the 311", body)
		}
	})

	t.Run("away-notify sets the ghost's presence", func(t *testing.T) {
		bob.Send("AWAY :out for lunch")
		e.eventually("bob's ghost unavailable", func() bool {
			p, err := alice.GetPresence(ctx, e.ghost("bob"))
			return err == nil && p.Presence == event.PresenceUnavailable && p.StatusMsg == "out for lunch"
		})
		bob.Send("AWAY")
		e.eventually("bob's ghost online again", func() bool {
			p, err := alice.GetPresence(ctx, e.ghost("bob"))
			return err == nil && p.Presence == event.PresenceOnline
		})
	})

	t.Run("wrong stored password", func(t *testing.T) {
		carl := e.kit.NewUser("carl")
		carlDM := managementRoom(t, e, carl)
		e.sendText(carl, carlDM, "!irc storepass aliceacct not-the-password")
		testkit.WaitForEvent(t, carl, carlDM, from(e.cfg.BotID(), bodyHas("Stored your password")), wait)
		e.joinPortal(carl, "#v3")
		testkit.WaitForEvent(t, carl, carlDM, from(e.cfg.BotID(), bodyHas("refused your stored login for aliceacct")), wait)
		// Connected without it, as carl[m].
		bob.Expect(wait, ircCmd("JOIN", "carl[m]", "#v3"))
	})
}
