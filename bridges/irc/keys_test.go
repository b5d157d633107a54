package irc

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

// Channels with a key (+k): from a static mapping, the link command and
// the provisioning API; the bot and the puppets join with the key, follow
// an operator's change of it (across a restart), and a refused key is told
// in the room.
func TestChannelKeys(t *testing.T) {
	var carol *ircxtest.Client
	var alice *mautrix.Client
	var keyedRoom, lockedRoom id.RoomID
	e := startEnvWith(t, func(c *Config) {
		c.Permissions = map[string]bridge.Permission{c.ServerName: bridge.PermissionUser, "@adam:" + c.ServerName: bridge.PermissionAdmin}
		c.Provisioning.SharedSecret = provSecret
	}, func(e *env) {
		// carol is first in the channels, so their operator, and sets
		// their keys before the bridge starts.
		carol = e.ircUser("carol", "#keyed", "#locked")
		for _, line := range []string{"MODE #keyed +k sesame", "MODE #locked +k rightkey"} {
			carol.Send(line)
			carol.Expect(wait, ircCmd("MODE", "carol", strings.Fields(line)[1], "+k"))
		}
		alice = e.kit.NewUser("alice")
		keyedRoom = e.roomWithBot(alice, "Keyed")
		lockedRoom = e.roomWithBot(alice, "Locked")
		e.cfg.Networks[0].Mappings = map[string]ChannelMapping{
			"#keyed":  {Room: keyedRoom, Key: "sesame"},
			"#locked": {Room: lockedRoom, Key: "wrongkey"},
		}
	})
	ctx, bot := e.ctx, e.cfg.BotID()

	t.Run("static mapping with a key", func(t *testing.T) {
		carol.Expect(wait, ircCmd("JOIN", "mxbridge", "#keyed"))
		testkit.WaitForJoin(t, alice, keyedRoom, e.ghost("carol"), wait)
		carol.Expect(wait, ircCmd("JOIN", "alice[m]", "#keyed"))
		e.talk(alice, keyedRoom, carol, "#keyed")
	})

	t.Run("wrong key: the room and the user are told", func(t *testing.T) {
		testkit.WaitForEvent(t, alice, lockedRoom, from(bot, bodyHas(
			"The bridge could not join #locked on Test: the channel has a key (+k), and the bridge's is wrong or missing")), wait)
		told := testkit.WaitForEvent(t, alice, lockedRoom, from(bot, bodyHas(
			string(alice.UserID)+": your IRC connection could not join #locked on Test: the channel has a key (+k)")), wait)
		if m := told.Content.AsMessage().Mentions; m == nil || len(m.UserIDs) != 1 || m.UserIDs[0] != alice.UserID {
			t.Errorf("the notice mentions %+v, want %s", m, alice.UserID)
		}

		// alice knows the key: the bot and her puppet join with it; her
		// message with the key is removed.
		cmd := e.sendText(alice, lockedRoom, "!irc link test #locked key=rightkey")
		testkit.WaitForEvent(t, alice, lockedRoom, from(bot, bodyHas("The bridge joins #locked on Test with the new key.")), wait)
		waitRedacted(t, e, alice, lockedRoom, cmd)
		carol.Expect(wait, ircCmd("JOIN", "mxbridge", "#locked"))
		testkit.WaitForJoin(t, alice, lockedRoom, e.ghost("carol"), wait)
		e.talk(alice, lockedRoom, carol, "#locked")
	})

	t.Run("key changed on IRC", func(t *testing.T) {
		carol.Send("MODE #keyed +k newsesame")
		carol.Expect(wait, ircCmd("MODE", "carol", "#keyed", "+k"))
		// The bot saw it (the bridge has no way to show it: keys are
		// secrets).
		n := e.br.core.networks["test"]
		e.eventually("the bridge to know the new key", func() bool { return n.channelKey("#keyed") == "newsesame" })

		// A user who joins the room now gets in with the new key.
		bea := e.kit.NewUser("bea")
		if _, err := alice.InviteUser(ctx, keyedRoom, &mautrix.ReqInviteUser{UserID: bea.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bea.JoinRoomByID(ctx, keyedRoom); err != nil {
			t.Fatal(err)
		}
		carol.Expect(wait, ircCmd("JOIN", "bea[m]", "#keyed"))
		e.talk(bea, keyedRoom, carol, "#keyed")

		// The new key outlives a restart (the config still says sesame).
		e.stopBridge()
		carol.Expect(wait, ircCmd("QUIT", "mxbridge"))
		e.runBridge()
		carol.Expect(wait, ircCmd("JOIN", "mxbridge", "#keyed"))
		carol.Expect(wait, ircCmd("JOIN", "bea[m]", "#keyed"))
		e.talk(bea, keyedRoom, carol, "#keyed")
	})

	t.Run("link command with a key", func(t *testing.T) {
		carol.Send("JOIN #cmdkey")
		carol.Send("MODE #cmdkey +k cmdsecret")
		carol.Expect(wait, ircCmd("MODE", "carol", "#cmdkey", "+k"))
		adam := e.kit.NewUser("adam")
		room := e.roomWithBot(adam, "Command")
		testkit.WaitForJoin(t, adam, room, bot, wait)

		// Refused (no power), and removed all the same.
		dan := e.kit.NewUser("dan")
		if _, err := adam.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: dan.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := dan.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		refused := e.sendText(dan, room, "!irc link test #cmdkey key=cmdsecret")
		testkit.WaitForEvent(t, dan, room, from(bot, bodyHas("!irc link needs power level 50 in this room; you have 0")), wait)
		waitRedacted(t, e, dan, room, refused)

		cmd := e.sendText(adam, room, "!irc link test #cmdkey key=cmdsecret")
		carol.Expect(wait, ircCmd("JOIN", "mxbridge", "#cmdkey"))
		testkit.WaitForEvent(t, adam, room, from(bot, bodyHas("This room is now bridged to #cmdkey on Test.")), wait)
		waitRedacted(t, e, adam, room, cmd)
		testkit.WaitForJoin(t, adam, room, e.ghost("carol"), wait)
		e.talk(adam, room, carol, "#cmdkey")
		// Nothing shows the key: the bridge's answers do not hold it.
		resp, err := adam.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, evt := range resp.Chunk {
			if strings.Contains(string(evt.Content.VeryRaw), "cmdsecret") {
				t.Errorf("%s from %s holds the key: %s", evt.ID, evt.Sender, evt.Content.VeryRaw)
			}
		}
	})

	t.Run("provisioning link with a key", func(t *testing.T) {
		carol.Send("JOIN #provkey")
		carol.Send("MODE #provkey +k provsecret")
		carol.Expect(wait, ircCmd("MODE", "carol", "#provkey", "+k"))
		room := e.roomWithBot(alice, "Provisioned")
		testkit.WaitForJoin(t, alice, room, bot, wait)
		body := provJSON(map[string]any{"matrix_room_id": room, "remote_room_server": "test", "remote_room_channel": "#provkey",
			"op_nick": "carol", "key": "provsecret", "user_id": alice.UserID})
		if status, out := e.provCall("POST", "/link", provSecret, body); status != 200 {
			t.Fatalf("link: HTTP %d %v", status, out)
		}
		carol.Expect(wait, pm("mxbridge", "carol", "has requested to bridge"))
		carol.Send("PRIVMSG mxbridge :yes")
		carol.Expect(wait, ircCmd("JOIN", "mxbridge", "#provkey"))
		testkit.WaitForEvent(t, alice, room, from(bot, bodyHas("This room is now bridged to #provkey on Test, as carol approved.")), wait)
		testkit.WaitForJoin(t, alice, room, e.ghost("carol"), wait)
		e.talk(alice, room, carol, "#provkey")
	})

	t.Run("unlink forgets the key", func(t *testing.T) {
		n := e.br.core.networks["test"]
		room := keyedRoom
		e.sendText(alice, room, "!irc unlink")
		carol.Expect(wait, ircCmd("PART", "mxbridge", "#keyed"))
		e.eventually("the key of #keyed forgotten", func() bool { return n.channelKey("#keyed") == "" })
		var raw string
		err := e.br.Framework.DB.QueryRow(ctx, `SELECT value FROM framework_kv WHERE scope = 'global' AND key = 'irc/test/key/#keyed'`).Scan(&raw)
		if err == nil {
			t.Errorf("the key of #keyed is still stored")
		}
	})
}

// talk checks that messages go both ways between cli in room and the IRC
// user ircUser in channel. The puppet sends only once it joined the
// channel: what IRC receives shows that it got in.
func (e *env) talk(cli *mautrix.Client, room id.RoomID, ircUser *ircxtest.Client, channel string) {
	e.t.Helper()
	puppet := cli.UserID.Localpart() + "[m]"
	text := "from " + puppet + " to " + channel
	e.sendText(cli, room, text)
	ircUser.Expect(wait, ircMsg("PRIVMSG", puppet, channel, text))
	text = "from " + ircUser.Nick + " to " + channel
	ircUser.Send("PRIVMSG " + channel + " :" + text)
	testkit.WaitForEvent(e.t, cli, room, from(e.ghost(ircUser.Nick), testkit.HasBody(text)), wait)
}

// roomWithBot makes a room of cli's with the bridge bot invited, at power
// 50 (to remove messages holding keys). The bot joins once the bridge
// runs.
func (e *env) roomWithBot(cli *mautrix.Client, name string) id.RoomID {
	e.t.Helper()
	created, err := cli.CreateRoom(e.ctx, &mautrix.ReqCreateRoom{Name: name, Invite: []id.UserID{e.cfg.BotID()},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{e.cfg.BotID(): 50}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return created.RoomID
}
