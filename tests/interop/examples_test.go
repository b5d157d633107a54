//go:build interop

package interop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/loopback"
)

// wait bounds each step a user waits for; generous, as Dendrite hands
// events to appservices through its internal NATS queue.
const wait = 20 * time.Second

// exampleBot is one of examples/ built as its own binary, with a config
// file and the registration it generated.
type exampleBot struct {
	name, dir, binary, config, registration, listen string
	userID                                          id.UserID
}

// prepareBot builds examples/NAME and writes its config (framework.Config
// keys) pointing at homeserverURL, then has the binary write its
// registration file, as an operator would.
func prepareBot(t *testing.T, name, asID, homeserverURL string) *exampleBot {
	t.Helper()
	dir := t.TempDir()
	b := &exampleBot{name: name, dir: dir, binary: filepath.Join(dir, name),
		config: filepath.Join(dir, name+".yaml"), registration: filepath.Join(dir, "registration.yaml"),
		userID: id.NewUserID(asID+"bot", dendriteServerName)}
	// Built as an operator would build them: the examples as they are.
	build := exec.Command("go", "build", "-o", b.binary, "./examples/"+name)
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/%s: %v\n%s", name, err, out)
	}
	var err error
	if b.listen, err = loopback.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`homeserver_url: %s
server_name: %s
id: %s
listen: %s
registration: registration.yaml
bot_localpart: %sbot
ghost_prefix: %s_
alias_prefix: %s_
database: sqlite:%s.db
`, homeserverURL, dendriteServerName, asID, b.listen, asID, asID, asID, asID)
	if err := os.WriteFile(b.config, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	gen := exec.Command(b.binary, "-config", b.config, "generate-registration")
	gen.Dir = dir
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("%s generate-registration: %v\n%s", name, err, out)
	}
	return b
}

// start runs the bot until the (sub)test ends and waits for its HTTP server.
func (b *exampleBot) start(t *testing.T) {
	t.Helper()
	logPath := filepath.Join(b.dir, b.name+".log")
	cmd := startProcess(t, b.name, logPath, b.dir, b.binary, "-config", b.config)
	waitHTTP(t, "http://"+b.listen+"/_matrix/mau/live", cmd, wait)
}

// newUser signs up on the homeserver with m.login.dummy (open
// registration) and returns the logged-in client.
func newUser(t *testing.T, homeserverURL, localpart string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(homeserverURL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{
		Username: localpart, Password: random.String(32),
	})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return cli
}

// TestExamplesOnDendrite runs examples/echobot and examples/remindbot,
// unchanged, against Dendrite: a user invites each, sees it join and gets
// its answers, as in the examples' own tests against our homeserver.
func TestExamplesOnDendrite(t *testing.T) {
	bin := installDendrite(t)
	hsAddr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	hsURL := "http://" + hsAddr
	echo := prepareBot(t, "echobot", "echo", hsURL)
	remind := prepareBot(t, "remindbot", "remind", hsURL)

	start := time.Now()
	startDendrite(t, bin, hsAddr, []string{echo.registration, remind.registration})
	t.Logf("Dendrite %s answering on %s after %v", dendriteVersion, hsURL, time.Since(start).Round(time.Millisecond))
	alice := newUser(t, hsURL, "alice")
	ctx := context.Background()

	t.Run("echobot", func(t *testing.T) {
		echo.start(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{echo.userID}})
		if err != nil {
			t.Fatal(err)
		}
		testkit.WaitForJoin(t, alice, room.RoomID, echo.userID, wait)
		sent, err := alice.SendText(ctx, room.RoomID, "hello **bot**")
		if err != nil {
			t.Fatal(err)
		}
		reply := testkit.WaitForEvent(t, alice, room.RoomID, func(e *event.Event) bool {
			return e.Sender == echo.userID && e.Type == event.EventMessage
		}, wait)
		content := reply.Content.AsMessage()
		if content.Body != "hello **bot**" || content.MsgType != event.MsgNotice || content.RelatesTo.GetReplyTo() != sent.EventID {
			t.Fatalf("reply = %q (%s) in reply to %q, want the same text as a notice replying to %s",
				content.Body, content.MsgType, content.RelatesTo.GetReplyTo(), sent.EventID)
		}
		if content.FormattedBody != "hello <strong>bot</strong>" {
			t.Errorf("formatted reply = %q", content.FormattedBody)
		}
		// One more message: exactly one more reply (the bot ignores its own).
		if _, err := alice.SendText(ctx, room.RoomID, "second"); err != nil {
			t.Fatal(err)
		}
		testkit.WaitForEvent(t, alice, room.RoomID, func(e *event.Event) bool {
			return e.Sender == echo.userID && e.Content.AsMessage().Body == "second"
		}, wait)
		time.Sleep(time.Second) // time enough for a reply to a reply to show up
		msgs, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		var replies int
		for _, e := range msgs.Chunk {
			if e.Sender == echo.userID && e.Type == event.EventMessage {
				replies++
			}
		}
		if replies != 2 {
			t.Errorf("bot sent %d messages, want 2", replies)
		}
	})

	t.Run("remindbot", func(t *testing.T) {
		remind.start(t)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{remind.userID}})
		if err != nil {
			t.Fatal(err)
		}
		testkit.WaitForJoin(t, alice, room.RoomID, remind.userID, wait)
		ask := func(command string) string {
			t.Helper()
			sent, err := alice.SendText(ctx, room.RoomID, command)
			if err != nil {
				t.Fatal(err)
			}
			reply := testkit.WaitForEvent(t, alice, room.RoomID, func(e *event.Event) bool {
				return e.Sender == remind.userID && e.Type == event.EventMessage &&
					e.Content.AsMessage().RelatesTo.GetReplyTo() == sent.EventID
			}, wait)
			return reply.Content.AsMessage().Body
		}
		if got := ask("!help"); !strings.Contains(got, "!remind <when> <text>") || !strings.Contains(got, "!forget <id>") {
			t.Errorf("help: %q", got)
		}
		asked := time.Now()
		if got := ask("!remind 2s hello"); !strings.Contains(got, "I'll remind you at") {
			t.Fatalf("remind: %q", got)
		}
		fired := testkit.WaitForEvent(t, alice, room.RoomID, func(e *event.Event) bool {
			return e.Sender == remind.userID && strings.HasPrefix(e.Content.AsMessage().Body, "⏰")
		}, wait)
		if since := time.Since(asked); since < 2*time.Second {
			t.Errorf("reminder seen %v after asking, before it was due", since)
		}
		msg := fired.Content.AsMessage()
		if msg.Body != "⏰ "+string(alice.UserID)+": hello" || msg.Mentions == nil ||
			!slices.Equal(msg.Mentions.UserIDs, []id.UserID{alice.UserID}) {
			t.Errorf("reminder = %q, mentions %+v", msg.Body, msg.Mentions)
		}
	})
}
