package main

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bot"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

// A user invites echobot, it joins, and each message comes back as a
// reply to it — but the bot does not answer its own notices.
func TestEchobot(t *testing.T) {
	kit := testkit.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := bot.New(ctx, kit.FrameworkConfig("echo"), zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	kit.RegisterAppservice(b.AS.Registration)
	setup(b)
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Stop()

	alice := kit.NewUser("alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{b.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, room.RoomID, b.UserID, 10*time.Second)
	sent, err := alice.SendText(ctx, room.RoomID, "hello **bot**")
	if err != nil {
		t.Fatal(err)
	}
	reply := testkit.WaitForEvent(t, alice, room.RoomID, func(e *event.Event) bool {
		return e.Sender == b.UserID && e.Type == event.EventMessage
	}, 10*time.Second)
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
		return e.Sender == b.UserID && e.Content.AsMessage().Body == "second"
	}, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // time enough for a reply to a reply to show up
	msgs, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	var replies int
	for _, e := range msgs.Chunk {
		if e.Sender == b.UserID && e.Type == event.EventMessage {
			replies++
		}
	}
	if replies != 2 {
		t.Errorf("bot sent %d messages, want 2", replies)
	}
}
