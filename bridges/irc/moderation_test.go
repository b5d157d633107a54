package irc

import (
	"strings"
	"testing"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/testkit"
)

// setPower gives a Matrix user a power level in a portal room, as the
// bridge bot (which created the room).
func (e *env) setPower(room id.RoomID, user id.UserID, level int) {
	e.t.Helper()
	var pl event.PowerLevelsEventContent
	if err := e.botCli.StateEvent(e.ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		e.t.Fatal(err)
	}
	pl.SetUserLevel(user, level)
	if _, err := e.botCli.SendStateEvent(e.ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) roomTopic(cli *mautrix.Client, room id.RoomID) (string, bool) {
	var topic event.TopicEventContent
	if err := cli.StateEvent(e.ctx, room, event.StateTopic, "", &topic); err != nil {
		return "", false
	}
	return topic.Topic, true
}

// A Matrix moderator's topic change, kick and ban are made on IRC by
// their puppet when it is a channel operator; when IRC refuses, the room
// is told and shown the truth again.
func TestMatrixModeration(t *testing.T) {
	e := startEnv(t, nil)
	ctx := e.ctx
	alice := e.kit.NewUser("alice")
	carol := e.ircUser("carol", "#mod") // first in: channel operator
	bob := e.ircUser("bob", "#mod")
	carol.Send("MODE #mod +t")
	carol.Send("TOPIC #mod :irc topic")
	carol.Expect(wait, ircCmd("TOPIC", "carol", "#mod", "irc topic"))
	room := e.joinPortal(alice, "#mod")
	carol.Expect(wait, ircCmd("JOIN", "alice[m]", "#mod"))
	testkit.WaitForJoin(t, alice, room, e.ghost("bob"), wait)
	e.eventually("the IRC topic in the room", func() bool { topic, _ := e.roomTopic(alice, room); return topic == "irc topic" })
	e.setPower(room, alice.UserID, 50) // a Matrix moderator, not an IRC operator yet

	t.Run("topic refused without op", func(t *testing.T) {
		if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: "matrix topic"}); err != nil {
			t.Fatal(err)
		}
		testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("your topic change was not made on IRC")), wait)
		e.eventually("the topic set back to the channel's", func() bool { topic, _ := e.roomTopic(alice, room); return topic == "irc topic" })
	})

	t.Run("kick refused without op", func(t *testing.T) {
		if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: e.ghost("bob"), Reason: "go"}); err != nil {
			t.Fatal(err)
		}
		testkit.WaitForEvent(t, alice, room, from(e.cfg.BotID(), bodyHas("your kick of bob was not made on IRC")), wait)
		testkit.WaitForJoin(t, alice, room, e.ghost("bob"), wait)
	})

	carol.Send("MODE #mod +o alice[m]")
	carol.Expect(wait, ircCmd("MODE", "carol", "#mod", "+o", "alice[m]"))

	t.Run("topic", func(t *testing.T) {
		if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: "set on matrix"}); err != nil {
			t.Fatal(err)
		}
		carol.Expect(wait, ircCmd("TOPIC", "alice[m]", "#mod", "set on matrix"))
		// The bridge does not echo it back as its own change.
		carol.Send("PRIVMSG #mod :after the topic")
		testkit.WaitForEvent(t, alice, room, testkit.HasBody("after the topic"), wait)
		resp, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, evt := range resp.Chunk {
			if evt.Type == event.StateTopic && evt.Sender != alice.UserID && evt.Content.Raw["topic"] == "set on matrix" {
				t.Errorf("%s set the topic again", evt.Sender)
			}
		}
	})

	t.Run("kick", func(t *testing.T) {
		if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: e.ghost("bob"), Reason: "spam"}); err != nil {
			t.Fatal(err)
		}
		m := bob.Expect(wait, ircCmd("KICK", "alice[m]", "#mod", "bob"))
		if m.Trailing() != "spam" {
			t.Errorf("kick reason %q", m.Trailing())
		}
	})

	t.Run("ban", func(t *testing.T) {
		bob.Send("JOIN #mod")
		testkit.WaitForJoin(t, alice, room, e.ghost("bob"), wait)
		if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: e.ghost("bob"), Reason: "enough"}); err != nil {
			t.Fatal(err)
		}
		carol.Expect(wait, ircCmd("MODE", "alice[m]", "#mod", "+b", "bob!*@*"))
		carol.Expect(wait, ircCmd("KICK", "alice[m]", "#mod", "bob"))
		bob.Send("JOIN #mod")
		bob.Expect(wait, func(m *irc.Message) bool { return m.Command == "474" && strings.EqualFold(m.Param(1), "#mod") })
	})

	t.Run("unban", func(t *testing.T) {
		if _, err := alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: e.ghost("bob")}); err != nil {
			t.Fatal(err)
		}
		carol.Expect(wait, ircCmd("MODE", "alice[m]", "#mod", "-b", "bob!*@*"))
		bob.Send("JOIN #mod")
		testkit.WaitForJoin(t, alice, room, e.ghost("bob"), wait)
	})

	t.Run("invite", func(t *testing.T) {
		carol.Send("MODE #mod +i")
		carol.Expect(wait, ircCmd("MODE", "carol", "#mod", "+i"))
		dave := e.ircUser("dave")
		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: e.ghost("dave")}); err != nil {
			t.Fatal(err)
		}
		dave.Expect(wait, ircCmd("INVITE", "alice[m]", "dave", "#mod"))
		dave.Send("JOIN #mod")
		testkit.WaitForJoin(t, alice, room, e.ghost("dave"), wait)
	})
}
