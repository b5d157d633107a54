package irc

import (
	"testing"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

// An IRC user's direct chat follows their nick changes: the same room,
// the new nick's ghost in it, messages both ways with the new nick. A
// chat the Matrix user already has with the new nick stays that nick's.
func TestDirectChatFollowsNickChange(t *testing.T) {
	e := startEnv(t, func(c *Config) {
		c.Permissions = map[string]bridge.Permission{c.ServerName: bridge.PermissionUser}
	})
	// The bridge sees nick changes in the channels it shares with IRC
	// users.
	erin := e.ircUser("erin", "#dmnick")
	alice := e.kit.NewUser("alice")
	e.joinPortal(alice, "#dmnick")
	erin.Expect(wait, ircCmd("JOIN", "alice[m]", "#dmnick"))

	erin.Send("PRIVMSG alice[m] :psst")
	dm := e.acceptDirectChat(alice, e.ghost("erin"))
	testkit.WaitForEvent(t, alice, dm, from(e.ghost("erin"), testkit.HasBody("psst")), wait)

	t.Run("messages after a nick change", func(t *testing.T) {
		erin.Send("NICK erina")
		erin.Send("PRIVMSG alice[m] :it's me, renamed")
		testkit.WaitForEvent(t, alice, dm, from(e.ghost("erina"), testkit.HasBody("it's me, renamed")), wait)
		leave := testkit.WaitForEvent(t, alice, dm, membership(e.ghost("erin"), event.MembershipLeave), wait)
		if reason := leave.Content.AsMember().Reason; reason != "changed nick to erina" {
			t.Errorf("the old ghost left with %q", reason)
		}
		e.sendText(alice, dm, "hello erina")
		erin.Expect(wait, ircMsg("PRIVMSG", "alice[m]", "erina", "hello erina"))
	})

	t.Run("a chat with the new nick stays its own", func(t *testing.T) {
		// gwen has a chat with alice; she leaves, and erina takes her nick.
		gwen := e.ircUser("gwen")
		gwen.Send("PRIVMSG alice[m] :gwen here")
		gwenDM := e.acceptDirectChat(alice, e.ghost("gwen"))
		testkit.WaitForEvent(t, alice, gwenDM, from(e.ghost("gwen"), testkit.HasBody("gwen here")), wait)
		gwen.Send("QUIT :bye")
		gwen.Expect(wait, func(m *irc.Message) bool { return m.Command == "ERROR" })
		erin.Send("NICK gwen")
		erin.Expect(wait, ircCmd("NICK", "erina", "gwen"))
		erin.Send("PRIVMSG alice[m] :a new gwen")
		testkit.WaitForEvent(t, alice, gwenDM, from(e.ghost("gwen"), testkit.HasBody("a new gwen")), wait)
		// The old chat is erina's still: nobody has that nick now.
		lost := e.sendText(alice, dm, "erina?")
		refusal := testkit.WaitForEvent(t, alice, dm, from(e.cfg.BotID(), bodyHas("Not delivered to erina: the IRC server refused it")), wait)
		if got := refusal.Content.AsMessage().RelatesTo.GetReplyTo(); got != lost {
			t.Errorf("the refusal replies to %s, want %s", got, lost)
		}
	})
}

// acceptDirectChat waits for the invite of ghost to a direct chat, joins
// it and returns the room.
func (e *env) acceptDirectChat(cli *mautrix.Client, ghost id.UserID) id.RoomID {
	e.t.Helper()
	var dm id.RoomID
	e.eventually("an invite from "+string(ghost), func() bool {
		resp, err := cli.SyncRequest(e.ctx, 0, "", "", false, "")
		if err != nil {
			return false
		}
		for roomID, inv := range resp.Rooms.Invite {
			for _, evt := range inv.State.Events {
				if evt.Type == event.StateMember && evt.Sender == ghost {
					dm = roomID
				}
			}
		}
		return dm != ""
	})
	if _, err := cli.JoinRoomByID(e.ctx, dm); err != nil {
		e.t.Fatal(err)
	}
	return dm
}
