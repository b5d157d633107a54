package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/testkit"
)

// hookURLRE finds a hook URL in the bot's private message.
var hookURLRE = regexp.MustCompile(`http://[^\s` + "`" + `]+/hooks/[A-Za-z0-9]+`)

// webhookRoundTrip is what an operator does after `make run`: invite the
// bot to a room, create a hook, read its URL in the direct message, POST
// to it, and see the message in the room.
func webhookRoundTrip(t *testing.T, alice *mautrix.Client, bot id.UserID) {
	t.Helper()
	ctx := context.Background()
	const wait = 20 * time.Second
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "alerts", Invite: []id.UserID{bot}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, room.RoomID, bot, wait)
	if _, err := alice.SendText(ctx, room.RoomID, "!webhook new ops"); err != nil {
		t.Fatal(err)
	}
	var hookURL string
	for deadline := time.Now().Add(wait); hookURL == "" && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		for invited := range resp.Rooms.Invite {
			if _, err := alice.JoinRoomByID(ctx, invited); err != nil {
				t.Fatal(err)
			}
		}
		for joined, r := range resp.Rooms.Join {
			if joined == room.RoomID {
				continue
			}
			for _, evt := range r.Timeline.Events {
				_ = evt.Content.ParseRaw(evt.Type)
				if evt.Sender == bot && evt.Type == event.EventMessage {
					hookURL = hookURLRE.FindString(evt.Content.AsMessage().Body)
				}
			}
		}
	}
	if hookURL == "" {
		t.Fatalf("no hook URL from %s in a direct message within %v", bot, wait)
	}
	resp, err := http.Post(hookURL, "application/json", strings.NewReader(`{"text": "backup *finished*", "username": "cron"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: HTTP %d", hookURL, resp.StatusCode)
	}
	evt := testkit.WaitForEvent(t, alice, room.RoomID, func(evt *event.Event) bool {
		return evt.Type == event.EventMessage && strings.Contains(evt.Content.AsMessage().Body, "backup") && strings.HasSuffix(string(evt.Sender), "_cron:"+bot.Homeserver())
	}, wait)
	if msg := evt.Content.AsMessage(); !strings.Contains(msg.FormattedBody, "<strong>finished</strong>") {
		t.Errorf("webhook message HTML = %q", msg.FormattedBody)
	}
}

// TestRunStartsWebhooks: `switchboard run` starts the webhook bridge beside
// the homeserver, registered and reachable, and says where in its banner.
func TestRunStartsWebhooks(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	listen := freeListen(t)
	url := "http://" + listen
	mustSB(t, cliOpts{}, "init", "--data", data, "--listen", listen, "--hooks-listen", "127.0.0.1:0")
	srv := startProcess(t, cliOpts{}, "run", "--data", data)
	srv.waitReady(url)
	if !regexp.MustCompile(`Webhooks: +http://127\.0\.0\.1:\d+/hooks/`).MatchString(srv.stdout.String()) {
		t.Errorf("run's banner does not say where the webhooks are:\n%s", srv.output())
	}
	if !fileExists(filepath.Join(data, "appservices", "webhooks.yaml")) {
		t.Errorf("no registration in %s/appservices", data)
	}
	mustSB(t, cliOpts{stdin: "alice's password\n"}, "user", "add", "alice", "--data", data)
	alice := login(t, url, "alice", "alice's password")
	webhookRoundTrip(t, alice, id.NewUserID("webhooks", "localhost"))
	if code := srv.signal(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("run exited %d on SIGTERM:\n%s", code, srv.output())
	}
}

// TestWebhooksCommand: `switchboard webhooks --config FILE` runs the bridge
// alone against a homeserver it only knows by URL, with the registration
// it generates loaded by the operator.
func TestWebhooksCommand(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	listen := freeListen(t)
	url := "http://" + listen
	mustSB(t, cliOpts{}, "init", "--data", data, "--listen", listen, "--server-name", "example.org")
	hs := startProcess(t, cliOpts{}, "homeserver", "--data", data)
	hs.waitReady(url)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "webhooks.yaml")
	writeFile(t, cfg, "homeserver_url: "+url+"\nserver_name: example.org\nlisten: "+freeListen(t)+"\nhooks_listen: "+freeListen(t)+"\n")
	if r := sb(t, "webhooks", "--config", filepath.Join(dir, "missing.yaml")); r.code != 1 || !strings.Contains(r.stderr, "missing.yaml") {
		t.Errorf("missing config: want exit 1 naming the file, got %s", r)
	}
	writeFile(t, filepath.Join(dir, "bad.yaml"), "homeserver_url: "+url+"\nserver_name: example.org\nsender_mode: loud\n")
	if r := sb(t, "webhooks", "--config", filepath.Join(dir, "bad.yaml")); r.code != 1 || !strings.Contains(r.stderr, "sender_mode") {
		t.Errorf("bad config: want exit 1 naming sender_mode, got %s", r)
	}
	out := mustSB(t, cliOpts{}, "webhooks", "--config", cfg, "generate-registration")
	if !strings.Contains(out, "Registration written") {
		t.Errorf("generate-registration said %q", out)
	}
	reg := filepath.Join(dir, "webhooks-registration.yaml")
	if info, err := os.Stat(reg); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("registration file: %v, %v", info, err)
	}
	mustSB(t, cliOpts{}, "appservice", "add", "--data", data, reg)
	if err := hs.cmd.Process.Signal(syscall.SIGHUP); err != nil { // reload the registrations
		t.Fatal(err)
	}
	if !hs.waitStderr("Appservice registrations reloaded", 10*time.Second) {
		t.Fatalf("the homeserver did not reload the registrations:\n%s", hs.output())
	}
	hooks := startProcess(t, cliOpts{}, "webhooks", "--config", cfg)
	if !hooks.waitStderr("Webhooks started", 20*time.Second) {
		t.Fatalf("switchboard webhooks did not start:\n%s", hooks.output())
	}
	mustSB(t, cliOpts{stdin: "alice's password\n"}, "user", "add", "alice", "--data", data)
	alice := login(t, url, "alice", "alice's password")
	webhookRoundTrip(t, alice, id.NewUserID("webhooks", "example.org"))
	if code := hooks.signal(syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("webhooks exited %d on SIGTERM:\n%s", code, hooks.output())
	}
}
