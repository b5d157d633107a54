package main

import (
	"bufio"
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/loopback"
)

const wait = 10 * time.Second

// startBridge runs relaybridge as main does against the kit's homeserver,
// until the test ends.
func startBridge(t *testing.T, kit *testkit.Kit) *Config {
	t.Helper()
	chatAddr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Config: bridge.Config{Config: *kit.FrameworkConfig("relay")}, ChatListen: chatAddr}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg, _, err := cfg.EnsureRegistration()
	if err != nil {
		t.Fatal(err)
	}
	kit.RegisterAppservice(reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relaybridge stopped with %v", err)
		}
	})
	return cfg
}

// chatUser is a TCP client of the chat, as nc would be.
type chatUser struct {
	t     *testing.T
	conn  net.Conn
	lines *bufio.Scanner
}

// connect dials the chat (waiting for it to listen) and takes a nick.
func connect(t *testing.T, addr, nick string) *chatUser {
	t.Helper()
	deadline := time.Now().Add(wait)
	conn, err := net.Dial("tcp", addr)
	for err != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatalf("the chat does not listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	u := &chatUser{t: t, conn: conn, lines: bufio.NewScanner(conn)}
	u.expect(`HELLO .*`)
	if nick != "" {
		u.send("NICK " + nick)
		u.expect("NICK " + regexp.QuoteMeta(nick))
	}
	return u
}

func (u *chatUser) send(line string) {
	u.t.Helper()
	if _, err := u.conn.Write([]byte(line + "\n")); err != nil {
		u.t.Fatalf("send %q: %v", line, err)
	}
}

// expect reads lines until one matches pattern (the whole line) and
// returns its submatches.
func (u *chatUser) expect(pattern string) []string {
	u.t.Helper()
	re := regexp.MustCompile("^" + pattern + "$")
	u.conn.SetReadDeadline(time.Now().Add(wait))
	var seen []string
	for u.lines.Scan() {
		if m := re.FindStringSubmatch(u.lines.Text()); m != nil {
			return m
		}
		seen = append(seen, u.lines.Text())
	}
	u.t.Fatalf("no line matching %q (%v); got %q", pattern, u.lines.Err(), seen)
	return nil
}

// next reads one line.
func (u *chatUser) next() string {
	u.t.Helper()
	u.conn.SetReadDeadline(time.Now().Add(wait))
	if !u.lines.Scan() {
		u.t.Fatalf("no line: %v", u.lines.Err())
	}
	return u.lines.Text()
}

func fromWith(sender id.UserID, match func(*event.Event) bool) func(*event.Event) bool {
	return func(e *event.Event) bool { return e.Sender == sender && match(e) }
}

func membershipIs(userID id.UserID, m event.Membership) func(*event.Event) bool {
	return func(e *event.Event) bool {
		return e.Type == event.StateMember && e.GetStateKey() == string(userID) && e.Content.AsMember().Membership == m
	}
}

// A portal made by joining its alias: messages, replies, edits, reactions,
// deletions and membership, both ways.
func TestRelaybridge(t *testing.T) {
	kit := testkit.Start(t)
	cfg := startBridge(t, kit)
	ctx := context.Background()
	bob := connect(t, cfg.ChatListen, "bob")
	bob.send("JOIN #go")
	bob.expect("JOIN #go bob")
	bobGhost := cfg.GhostID("bob")

	// Alice joins #relay_#go: the bridge creates the portal, bob's ghost in it.
	alice := kit.NewUser("alice")
	if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
		t.Fatal(err)
	}
	joined, err := alice.JoinRoom(ctx, "#relay_#go:"+kit.ServerName, nil)
	if err != nil {
		t.Fatalf("join #relay_#go: %v", err)
	}
	room := joined.RoomID
	testkit.WaitForJoin(t, alice, room, bobGhost, wait)
	var info event.BridgeEventContent
	if err := alice.StateEvent(ctx, room, event.StateBridge, "im.switchboard://relay/#go", &info); err != nil ||
		info.Protocol.ID != "relay" || info.Channel.ID != "#go" || info.BridgeBot != cfg.BotID() {
		t.Errorf("m.bridge = %+v, %v", info, err)
	}

	// A TCP message comes from bob's ghost, named bob.
	bob.send("MSG #go hello from tcp")
	helloID := bob.expect(`MSG #go (m\d+) bob hello from tcp`)[1]
	hello := testkit.WaitForEvent(t, alice, room, testkit.HasBody("hello from tcp"), wait)
	var ghost event.MemberEventContent
	if err := alice.StateEvent(ctx, room, event.StateMember, string(bobGhost), &ghost); err != nil || hello.Sender != bobGhost || ghost.Displayname != "bob" {
		t.Errorf("hello came from %s, whose name is %q (%v); want %s named bob", hello.Sender, ghost.Displayname, err, bobGhost)
	}

	// A Matrix message reaches TCP under the sender's display name.
	hi, err := alice.SendText(ctx, room, "hi bob")
	if err != nil {
		t.Fatal(err)
	}
	hiID := bob.expect(`MSG #go (m\d+) Alice_Liddell hi bob`)[1]

	// A TCP reply is a Matrix reply to the right event.
	bob.send("REPLY #go " + hiID + " nice to meet you")
	bob.expect(`REPLY #go m\d+ bob ` + hiID + ` nice to meet you`)
	reply := testkit.WaitForEvent(t, alice, room, testkit.HasBody("nice to meet you"), wait)
	if got := reply.Content.AsMessage().RelatesTo.GetReplyTo(); got != hi.EventID {
		t.Errorf("the reply replies to %q, want %s", got, hi.EventID)
	}

	// A Matrix edit is an EDIT of the right message.
	edit := event.MessageEventContent{MsgType: event.MsgText, Body: "hi bob!"}
	edit.SetEdit(hi.EventID)
	if _, err := alice.SendMessageEvent(ctx, room, event.EventMessage, &edit); err != nil {
		t.Fatal(err)
	}
	bob.expect("EDIT #go " + hiID + " Alice_Liddell hi bob!")

	// A TCP edit and a TCP reaction show on Matrix.
	bob.send("EDIT #go " + helloID + " hello from tcp (edited)")
	testkit.WaitForEvent(t, alice, room, fromWith(bobGhost, func(e *event.Event) bool {
		c := e.Content.AsMessage()
		return c.RelatesTo.GetReplaceID() == hello.ID && c.NewContent != nil && c.NewContent.Body == "hello from tcp (edited)"
	}), wait)
	bob.send("REACT #go " + hiID + " 👍")
	testkit.WaitForEvent(t, alice, room, fromWith(bobGhost, func(e *event.Event) bool {
		r := e.Content.AsReaction().RelatesTo
		return e.Type == event.EventReaction && r.EventID == hi.EventID && r.Key == "👍"
	}), wait)

	// Deleting works both ways.
	if _, err := alice.RedactEvent(ctx, room, hi.EventID); err != nil {
		t.Fatal(err)
	}
	bob.expect("DELETE #go " + hiID + " Alice_Liddell")
	bob.send("DELETE #go " + helloID)
	testkit.WaitForEvent(t, alice, room, fromWith(bobGhost, func(e *event.Event) bool {
		return e.Type == event.EventRedaction && (e.Redacts == hello.ID || e.Content.AsRedaction().Redacts == hello.ID)
	}), wait)

	// PART and JOIN move the ghosts out and in; so does disconnecting.
	bob.send("PART #go")
	bob.expect("PART #go bob")
	testkit.WaitForEvent(t, alice, room, membershipIs(bobGhost, event.MembershipLeave), wait)
	carol := connect(t, cfg.ChatListen, "carol")
	carol.send("JOIN #go")
	testkit.WaitForJoin(t, alice, room, cfg.GhostID("carol"), wait)
	carol.conn.Close()
	testkit.WaitForEvent(t, alice, room, membershipIs(cfg.GhostID("carol"), event.MembershipLeave), wait)
}

// A room admin links an existing room with `!relay link #channel`.
func TestLinkCommand(t *testing.T) {
	kit := testkit.Start(t)
	cfg := startBridge(t, kit)
	ctx := context.Background()
	alice := kit.NewUser("alice")
	if err := alice.SetDisplayName(ctx, "Alice"); err != nil {
		t.Fatal(err)
	}
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Ops", Invite: []id.UserID{cfg.BotID()}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	testkit.WaitForJoin(t, alice, room, cfg.BotID(), wait)
	if _, err := alice.SendText(ctx, room, "!relay link #ops"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitForEvent(t, alice, room, fromWith(cfg.BotID(), func(e *event.Event) bool {
		return strings.HasPrefix(e.Content.AsMessage().Body, "This room is now bridged to #ops.")
	}), wait)

	dave := connect(t, cfg.ChatListen, "dave")
	dave.send("JOIN #ops")
	testkit.WaitForJoin(t, alice, room, cfg.GhostID("dave"), wait)
	dave.send("MSG #ops hello ops")
	testkit.WaitForEvent(t, alice, room, fromWith(cfg.GhostID("dave"), testkit.HasBody("hello ops")), wait)
	if _, err := alice.SendText(ctx, room, "hi dave"); err != nil {
		t.Fatal(err)
	}
	dave.expect(`MSG #ops m\d+ Alice hi dave`)
}
