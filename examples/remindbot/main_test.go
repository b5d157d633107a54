package main

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

// startBot runs remindbot as main does, until the returned stop.
func startBot(t *testing.T, cfg *framework.Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c := *cfg
	go func() { done <- run(ctx, &c, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("remindbot stopped with %v", err)
		}
	}
}

func TestRemindbot(t *testing.T) {
	kit := testkit.Start(t)
	cfg := kit.FrameworkConfig("remind")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg, _, err := cfg.EnsureRegistration()
	if err != nil {
		t.Fatal(err)
	}
	kit.RegisterAppservice(reg)
	stop := startBot(t, cfg)
	defer func() { stop() }()

	ctx := context.Background()
	alice := kit.NewUser("alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{cfg.BotID()}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, room.RoomID, cfg.BotID(), 10*time.Second)

	// ask sends a command and returns the bot's reply to it.
	ask := func(command string) string {
		t.Helper()
		sent, err := alice.SendText(ctx, room.RoomID, command)
		if err != nil {
			t.Fatal(err)
		}
		reply := testkit.WaitForEvent(t, alice, room.RoomID, func(e *event.Event) bool {
			return e.Sender == cfg.BotID() && e.Type == event.EventMessage && e.Content.AsMessage().RelatesTo.GetReplyTo() == sent.EventID
		}, 10*time.Second)
		return reply.Content.AsMessage().Body
	}

	if got := ask("!remind"); !strings.Contains(got, "Usage: `!remind <when> <text>`") {
		t.Errorf("no arguments: %q", got)
	}
	if got := ask("!remind soon stand up"); !strings.Contains(got, `"soon" is not a duration`) {
		t.Errorf("bad duration: %q", got)
	}
	if got := ask("!help"); !strings.Contains(got, "!remind <when> <text>") || !strings.Contains(got, "!forget <id>") {
		t.Errorf("help: %q", got)
	}
	if got := ask("!remind 1s stand up"); !strings.Contains(got, "I'll remind you at") {
		t.Fatalf("remind: %q", got)
	}
	fired := testkit.WaitForEvent(t, alice, room.RoomID, func(e *event.Event) bool {
		return e.Sender == cfg.BotID() && strings.HasPrefix(e.Content.AsMessage().Body, "⏰")
	}, 10*time.Second)
	msg := fired.Content.AsMessage()
	if msg.Body != "⏰ "+string(alice.UserID)+": stand up" || msg.Mentions == nil || !slices.Equal(msg.Mentions.UserIDs, []id.UserID{alice.UserID}) {
		t.Errorf("reminder = %q, mentions %+v", msg.Body, msg.Mentions)
	}

	// A reminder survives a restart of the bot, and can be cancelled.
	got := ask("!remind 2h write the report")
	reminderID := regexp.MustCompile("reminder `([a-z0-9]+)`").FindStringSubmatch(got)
	if reminderID == nil {
		t.Fatalf("remind: %q", got)
	}
	stop()
	stop = startBot(t, cfg)
	if got := ask("!reminders"); !strings.Contains(got, reminderID[1]) || !strings.Contains(got, "write the report") ||
		strings.Contains(got, "stand up") {
		t.Errorf("after restart, reminders: %q", got)
	}
	if got := ask("!forget " + reminderID[1]); !strings.Contains(got, "Forgot reminder") {
		t.Errorf("forget: %q", got)
	}
	if got := ask("!reminders"); got != "You have no reminders here." {
		t.Errorf("after forget: %q", got)
	}
}
