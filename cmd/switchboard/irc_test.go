package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

// TestRunStartsIRC: with a network in the irc section, `switchboard run`
// starts the IRC bridge beside the homeserver: a Matrix user joins the
// channel's alias and talks with an IRC user.
func TestRunStartsIRC(t *testing.T) {
	t.Parallel()
	ircd := ircxtest.Start(t, nil)
	data := filepath.Join(t.TempDir(), "data")
	listen := freeListen(t)
	url := "http://" + listen
	mustSB(t, cliOpts{}, "init", "--data", data, "--listen", listen, "--hooks-listen", "127.0.0.1:0")
	host, port, _ := strings.Cut(ircd.Addr, ":")
	cfgPath := filepath.Join(data, "switchboard.yaml")
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("irc:\n  networks:\n    - id: test\n      host: " + host + "\n      port: " + port + "\n      connection_rate: {per_second: 100, burst: 10}\n")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	srv := startProcess(t, cliOpts{}, "run", "--data", data)
	srv.waitReady(url)
	if !strings.Contains(srv.stdout.String(), "IRC:          test") {
		t.Errorf("run's banner does not list the IRC network:\n%s", srv.output())
	}
	mustSB(t, cliOpts{stdin: "alice's password\n"}, "user", "add", "alice", "--data", data)
	alice := login(t, url, "alice", "alice's password")

	bob := ircxtest.Dial(t, ircd.Addr, "bob")
	bob.Send("JOIN #ops")
	ctx := context.Background()
	var room id.RoomID
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := alice.JoinRoom(ctx, "#irc_test_#ops:localhost", nil)
		if err == nil {
			room = resp.RoomID
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("join #irc_test_#ops:localhost: %v\n%s", err, srv.output())
		}
		time.Sleep(200 * time.Millisecond) // the bridge is still connecting
	}
	if _, err := alice.SendText(ctx, room, "hello irc"); err != nil {
		t.Fatal(err)
	}
	bob.Expect(20*time.Second, func(m *irc.Message) bool {
		return m.Command == "PRIVMSG" && len(m.Params) == 2 && m.Params[0] == "#ops" && m.Params[1] == "hello irc"
	})
	bob.Send("PRIVMSG #ops :hello matrix")
	testkit.WaitForEvent(t, alice, room, func(evt *event.Event) bool {
		return evt.Type == event.EventMessage && evt.Content.AsMessage().Body == "hello matrix" && strings.Contains(string(evt.Sender), "bob")
	}, 20*time.Second)
	if code := srv.signal(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("run exited %d on SIGTERM:\n%s", code, srv.output())
	}
}
