package bot_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/bot"
	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func testLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// addCommands gives a bot the commands the tests use.
func addCommands(b *bot.Bot, reactions chan<- string) {
	b.Command(&bot.Command{Name: "say", Usage: "<words>", MinArgs: 1, Help: "Repeat the arguments, one per line.",
		Run: func(ctx context.Context, c *bot.CommandContext) error {
			_, err := c.Reply(ctx, strings.Join(c.Args, "\n"))
			return err
		}})
	b.Command(&bot.Command{Name: "admin", Help: "Moderators only.", MinPower: 50,
		Subcommands: []*bot.Command{{Name: "ping", Help: "Answer pong.", Run: func(ctx context.Context, c *bot.CommandContext) error {
			_, err := c.Reply(ctx, "pong")
			return err
		}}}})
	b.Command(&bot.Command{Name: "thread", Help: "Answer in a thread.",
		Run: func(ctx context.Context, c *bot.CommandContext) error {
			_, err := c.ReplyInThread(ctx, "in the thread")
			return err
		}})
	b.Command(&bot.Command{Name: "count", Help: "Say 1, then edit it to 2.",
		Run: func(ctx context.Context, c *bot.CommandContext) error {
			first, err := b.Send(ctx, c.RoomID(), "1")
			if err != nil {
				return err
			}
			_, err = b.Edit(ctx, c.RoomID(), first, "2")
			return err
		}})
	b.OnReaction(func(_ context.Context, r *bot.Reaction) error {
		reactions <- r.Key
		return nil
	})
}

// ask sends text and returns the bot's reply to it.
func ask(t *testing.T, user *mautrix.Client, roomID id.RoomID, botID id.UserID, text string) string {
	t.Helper()
	sent, err := user.SendText(context.Background(), roomID, text)
	if err != nil {
		t.Fatal(err)
	}
	reply := testkit.WaitForEvent(t, user, roomID, func(e *event.Event) bool {
		return e.Sender == botID && e.Type == event.EventMessage && e.Content.AsMessage().RelatesTo.GetReplyTo() == sent.EventID
	}, 10*time.Second)
	return reply.Content.AsMessage().Body
}

// commandsWork checks argument parsing, quoting, usage, permissions,
// subcommands, help and reactions from the user's side.
func commandsWork(t *testing.T, kit *testkit.Kit, b *bot.Bot, reactions <-chan string) {
	ctx := context.Background()
	alice := kit.NewUser("alice")
	bob := kit.NewUser("bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{b.UserID, bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, room.RoomID, b.UserID, 15*time.Second)
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		who       *mautrix.Client
		say, want string
	}{
		{alice, `!say one "two words" three\ four`, "one\ntwo words\nthree four"},
		{alice, "!say", "Usage: `!say <words>`"},
		{alice, `!say "unclosed`, "unclosed \" quote. Usage: `!say <words>`"},
		{alice, "!admin ping", "pong"},
		{bob, "!admin ping", "`!admin ping` needs power level 50 in this room; you have 0."},
		{alice, "!admin", "`!admin` commands:\n\n* `!admin ping` — Answer pong."},
		{alice, "!help say", "`!say <words>`: Repeat the arguments, one per line."},
		{alice, "!help nothing", "There is no command `nothing`. Try `!help`."},
	} {
		if got := ask(t, c.who, room.RoomID, b.UserID, c.say); got != c.want {
			t.Errorf("%s says %q: bot answered %q, want %q", c.who.UserID, c.say, got, c.want)
		}
	}
	fromBot := func(match func(*event.MessageEventContent) bool) func(*event.Event) bool {
		return func(e *event.Event) bool {
			return e.Sender == b.UserID && e.Type == event.EventMessage && match(e.Content.AsMessage())
		}
	}
	asked, err := alice.SendText(ctx, room.RoomID, "!thread")
	if err != nil {
		t.Fatal(err)
	}
	threaded := testkit.WaitForEvent(t, alice, room.RoomID, fromBot(func(c *event.MessageEventContent) bool {
		return c.Body == "in the thread"
	}), 10*time.Second).Content.AsMessage()
	if threaded.RelatesTo.GetThreadParent() != asked.EventID {
		t.Errorf("thread answer relates to %+v, want the thread of %s", threaded.RelatesTo, asked.EventID)
	}
	if _, err := alice.SendText(ctx, room.RoomID, "!count"); err != nil {
		t.Fatal(err)
	}
	edit := testkit.WaitForEvent(t, alice, room.RoomID, fromBot(func(c *event.MessageEventContent) bool {
		return c.RelatesTo.GetReplaceID() != ""
	}), 10*time.Second).Content.AsMessage()
	original := testkit.WaitForEvent(t, alice, room.RoomID, fromBot(func(c *event.MessageEventContent) bool {
		return c.Body == "1" && c.RelatesTo == nil
	}), 10*time.Second)
	if edit.NewContent == nil || edit.NewContent.Body != "2" || edit.RelatesTo.GetReplaceID() != original.ID {
		t.Errorf("edit = %+v replacing %s, want new content 2 replacing %s", edit.NewContent, edit.RelatesTo.GetReplaceID(), original.ID)
	}
	help := ask(t, alice, room.RoomID, b.UserID, "!help")
	for _, want := range []string{"`!say <words>`", "`!admin`", "`!help [command]`"} {
		if !strings.Contains(help, want) {
			t.Errorf("help %q lacks %s", help, want)
		}
	}
	sent, err := alice.SendText(ctx, room.RoomID, "react to me")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendReaction(ctx, room.RoomID, sent.EventID, "👍"); err != nil {
		t.Fatal(err)
	}
	select {
	case key := <-reactions:
		if key != "👍" {
			t.Errorf("reaction %q", key)
		}
	case <-time.After(10 * time.Second):
		t.Error("the reaction never reached the bot")
	}
}

func TestAppserviceBot(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		kit := testkit.Start(t)
		cfg := kit.FrameworkConfig("cmd")
		cfg.Database = uri
		b, err := bot.New(context.Background(), cfg, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		kit.RegisterAppservice(b.AS.Registration)
		reactions := make(chan string, 10)
		addCommands(b, reactions)
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer b.Stop()
		commandsWork(t, kit, b, reactions)
	})
}

// The same bot as a plain user over /sync: the same commands work, and a
// restart does not answer anything twice.
func TestSyncBot(t *testing.T) {
	kit := testkit.Start(t)
	account := kit.NewUser("syncbot")
	cfg := &bot.SyncConfig{HomeserverURL: kit.URL, UserID: account.UserID, AccessToken: account.AccessToken,
		Database: "sqlite:bot.db", DataDir: t.TempDir()}
	start := func() *bot.Bot {
		b, err := bot.NewSync(context.Background(), cfg, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		reactions := make(chan string, 10)
		addCommands(b, reactions)
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Wait for the first sync, after which invites are handled.
		deadline := time.Now().Add(10 * time.Second)
		for {
			var next string
			found, err := framework.NewKV(b.DB, "sync").Get(context.Background(), "next_batch", &next)
			if err != nil {
				t.Fatal(err)
			}
			if found && next != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the sync bot never synced")
			}
			time.Sleep(20 * time.Millisecond)
		}
		return b
	}
	b := start()
	ctx := context.Background()
	alice := kit.NewUser("carol")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{b.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, room.RoomID, b.UserID, 15*time.Second)
	if got := ask(t, alice, room.RoomID, b.UserID, `!say "in sync"`); got != "in sync" {
		t.Fatalf("sync bot answered %q", got)
	}
	b.Stop()
	b = start()
	defer b.Stop()
	if got := ask(t, alice, room.RoomID, b.UserID, "!say again"); got != "again" {
		t.Fatalf("after restart the sync bot answered %q", got)
	}
	time.Sleep(300 * time.Millisecond)
	msgs, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	var answers []string
	for _, e := range msgs.Chunk {
		if e.Sender == b.UserID && e.Type == event.EventMessage {
			_ = e.Content.ParseRaw(e.Type)
			answers = append(answers, e.Content.AsMessage().Body)
		}
	}
	slices.Reverse(answers)
	if !slices.Equal(answers, []string{"in sync", "again"}) {
		t.Errorf("sync bot answers %q, want each command answered once", answers)
	}
}
