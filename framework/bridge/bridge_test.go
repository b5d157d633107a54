package bridge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

const wait = 15 * time.Second

// testNetwork is a remote network in memory: what the bridge delivers to it
// is written to a log the test reads line by line; the test plays the
// remote side by calling the bridge's Remote* methods.
type testNetwork struct {
	requiresLogin bool
	bridge        *bridge.Bridge

	mu      sync.Mutex
	next    int
	fail    error
	entries chan string
}

func newTestNetwork(requiresLogin bool) *testNetwork {
	return &testNetwork{requiresLogin: requiresLogin, entries: make(chan string, 100)}
}

func (n *testNetwork) log(format string, args ...any) { n.entries <- fmt.Sprintf(format, args...) }

// expect waits for the next log entry and checks it.
func (n *testNetwork) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-n.entries:
		if got != want {
			t.Fatalf("remote side got %q, want %q", got, want)
		}
	case <-time.After(wait):
		t.Fatalf("remote side got nothing, want %q", want)
	}
}

func (n *testNetwork) Info() bridge.NetworkInfo {
	return bridge.NetworkInfo{ID: "test", DisplayName: "Testnet", RequiresLogin: n.requiresLogin}
}

func (n *testNetwork) Start(_ context.Context, b *bridge.Bridge) error {
	n.bridge = b
	b.SetState(bridge.StateConnected, "")
	return nil
}

func (n *testNetwork) Stop() {}

func (n *testNetwork) ResolveChannel(_ context.Context, channelID string) (*bridge.ChannelInfo, error) {
	if !strings.HasPrefix(channelID, "#") || channelID == "#missing" {
		return nil, bridge.ErrUnknownChannel
	}
	return &bridge.ChannelInfo{ID: channelID, Name: channelID + " on Testnet", Topic: "the " + channelID + " channel", Public: true}, nil
}

func (n *testNetwork) newID() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.fail; err != nil {
		n.fail = nil
		return "", err
	}
	n.next++
	return fmt.Sprintf("r%d", n.next), nil
}

func describeSender(msg *bridge.MatrixMessage) string {
	switch {
	case msg.Relayed:
		return "relay"
	case msg.Login != nil:
		return "login:" + msg.Login.ID
	default:
		return string(msg.Sender.ID)
	}
}

func (n *testNetwork) SendMessage(_ context.Context, msg *bridge.MatrixMessage) (string, error) {
	remoteID, err := n.newID()
	if err != nil {
		return "", err
	}
	reply := ""
	if msg.ReplyTo != nil {
		reply = " reply-to=" + msg.ReplyTo.RemoteID
	}
	n.log("%s %s %s: %s%s", remoteID, msg.Portal.ID, describeSender(msg), msg.Content.Body, reply)
	return remoteID, nil
}

func (n *testNetwork) SendEdit(_ context.Context, msg *bridge.MatrixMessage) (string, error) {
	n.log("edit %s: %s", msg.EditOf.RemoteID, msg.Content.Body)
	return "", nil
}

func (n *testNetwork) SendReaction(_ context.Context, r *bridge.MatrixReaction) (string, error) {
	n.log("react %s %s by %s", r.Target.RemoteID, r.Key, r.Sender.ID)
	return "rx-" + r.Target.RemoteID, nil
}

func (n *testNetwork) RemoveReaction(_ context.Context, r *bridge.MatrixReaction) error {
	n.log("unreact %s %s (%s)", r.Target.RemoteID, r.Key, r.RemoteID)
	return nil
}

func (n *testNetwork) SendRedaction(_ context.Context, _ *bridge.Portal, _ *bridge.User, _ *bridge.Login, target *bridge.Message) error {
	n.log("delete %s", target.RemoteID)
	return nil
}

func (n *testNetwork) PortalLinked(_ context.Context, p *bridge.Portal) error {
	n.log("linked %s", p.ID)
	return nil
}

func (n *testNetwork) PortalUnlinked(_ context.Context, p *bridge.Portal) { n.log("unlinked %s", p.ID) }

func (n *testNetwork) Login(_ context.Context, u *bridge.User, args []string) (*bridge.Login, error) {
	if len(args) != 1 || args[0] != "good-token" {
		return nil, errors.New("the token is wrong")
	}
	return &bridge.Login{ID: "acct-" + u.ID.Localpart(), RemoteName: "Remote " + u.ID.Localpart()}, nil
}

func (n *testNetwork) Logout(context.Context, *bridge.User, *bridge.Login) error { return nil }
func (n *testNetwork) LoginUsage() string                                        { return "<token>" }

// startBridge runs a bridge with network on the kit's homeserver.
func startBridge(t *testing.T, kit *testkit.Kit, network *testNetwork, configure func(*bridge.Config)) *bridge.Bridge {
	t.Helper()
	cfg := &bridge.Config{Config: *kit.FrameworkConfig("test")}
	cfg.Relay.Enabled = true
	if configure != nil {
		configure(cfg)
	}
	return runBridge(t, kit, cfg, network)
}

func runBridge(t *testing.T, kit *testkit.Kit, cfg *bridge.Config, network *testNetwork) *bridge.Bridge {
	t.Helper()
	br, err := bridge.New(context.Background(), cfg, network, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	kit.RegisterAppservice(br.AS.Registration)
	if err := br.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(br.Stop)
	return br
}

func text(body string) *event.MessageEventContent {
	return &event.MessageEventContent{MsgType: event.MsgText, Body: body}
}

func send(t *testing.T, cli *mautrix.Client, room id.RoomID, content *event.MessageEventContent) id.EventID {
	t.Helper()
	resp, err := cli.SendMessageEvent(context.Background(), room, event.EventMessage, content)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

func fromSender(sender id.UserID, match func(*event.Event) bool) func(*event.Event) bool {
	return func(evt *event.Event) bool { return evt.Sender == sender && match(evt) }
}

// TestPortalByAlias: a Matrix user joins #test_#general and talks with the
// remote side: messages, replies, edits, reactions and deletions both ways,
// through the message map.
func TestPortalByAlias(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		ctx := context.Background()
		kit := testkit.Start(t, testkit.WithDatabase(uri))
		network := newTestNetwork(false)
		br := startBridge(t, kit, network, nil)
		alice := kit.NewUser("alice")
		metricsBefore := testkit.Scrape(t, br.AS.Config.URL+"/metrics")

		alias := id.NewRoomAlias("test_#general", kit.ServerName)
		joined, err := alice.JoinRoom(ctx, alias.String(), nil)
		if err != nil {
			t.Fatalf("join %s: %v", alias, err)
		}
		room := joined.RoomID
		network.expect(t, "linked #general")
		var info event.BridgeEventContent
		if err := alice.StateEvent(ctx, room, event.StateBridge, "im.switchboard://test/#general", &info); err != nil {
			t.Fatalf("m.bridge state: %v", err)
		}
		if info.Protocol.ID != "test" || info.Channel.ID != "#general" || info.BridgeBot != br.AS.Config.BotID() {
			t.Errorf("m.bridge = %+v", info)
		}
		var name event.RoomNameEventContent
		if err := alice.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name.Name != "#general on Testnet" {
			t.Errorf("room name = %q (%v)", name.Name, err)
		}

		// Remote → Matrix, from a ghost with the remote user's name.
		bob := bridge.RemoteUser{ID: "bob", Name: "Bob (remote)"}
		bobID := br.AS.Config.GhostID("bob")
		x1, err := br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: "#general", Sender: bob, ID: "x1", Content: text("hello from remote")})
		if err != nil {
			t.Fatal(err)
		}
		testkit.WaitForEvent(t, alice, room, fromSender(bobID, testkit.HasBody("hello from remote")), wait)
		if dn, err := alice.GetDisplayName(ctx, bobID); err != nil || dn.DisplayName != "Bob (remote)" {
			t.Errorf("ghost display name = %+v (%v)", dn, err)
		}
		// The same remote message again (an echo, a resend) is not shown twice.
		if again, err := br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: "#general", Sender: bob, ID: "x1", Content: text("hello from remote")}); err != nil || again != x1 {
			t.Errorf("resent message: %s, %v; want %s", again, err, x1)
		}

		// Matrix → remote, and a reply to the remote message.
		send(t, alice, room, text("hi bob"))
		network.expect(t, "r1 #general "+string(alice.UserID)+": hi bob")
		reply := text("> <@test_bob> hello from remote\n\nwelcome")
		reply.SetReply(&event.Event{ID: x1, RoomID: room, Sender: bobID})
		send(t, alice, room, reply)
		network.expect(t, "r2 #general "+string(alice.UserID)+": welcome reply-to=x1")

		// A remote reply to Alice's message points at her event.
		aliceMsg, err := br.MessageByRemoteID(ctx, "#general", "r1")
		if err != nil || aliceMsg == nil {
			t.Fatalf("message map of r1: %v, %v", aliceMsg, err)
		}
		if _, err := br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: "#general", Sender: bob, ID: "x2", ReplyTo: "r1", Content: text("thanks")}); err != nil {
			t.Fatal(err)
		}
		got := testkit.WaitForEvent(t, alice, room, fromSender(bobID, testkit.HasBody("thanks")), wait)
		if to := got.Content.AsMessage().RelatesTo.GetReplyTo(); to != aliceMsg.EventID {
			t.Errorf("remote reply points at %q, want %q", to, aliceMsg.EventID)
		}

		// Edits, reactions and redactions from Matrix.
		edit := text("hi bob!")
		edit.SetEdit(aliceMsg.EventID) // body "* hi bob!", m.new_content "hi bob!"
		send(t, alice, room, edit)
		network.expect(t, "edit r1: hi bob!")
		reaction, err := alice.SendReaction(ctx, room, x1, "👍")
		if err != nil {
			t.Fatal(err)
		}
		network.expect(t, "react x1 👍 by "+string(alice.UserID))
		if _, err := alice.RedactEvent(ctx, room, reaction.EventID); err != nil {
			t.Fatal(err)
		}
		network.expect(t, "unreact x1 👍 (rx-x1)")
		if _, err := alice.RedactEvent(ctx, room, aliceMsg.EventID); err != nil {
			t.Fatal(err)
		}
		network.expect(t, "delete r1")

		// Edits, reactions and deletions from the remote side.
		if err := br.RemoteEdit(ctx, "#general", bob, "x2", text("thanks!")); err != nil {
			t.Fatal(err)
		}
		editEvt := testkit.WaitForEvent(t, alice, room, fromSender(bobID, func(evt *event.Event) bool {
			c := evt.Content.AsMessage()
			return evt.Type == event.EventMessage && c.Body == "* thanks!" && c.NewContent != nil && c.NewContent.Body == "thanks!"
		}), wait)
		if editEvt.Content.AsMessage().RelatesTo.GetReplaceID() != got.ID {
			t.Errorf("remote edit replaces %q, want %q", editEvt.Content.AsMessage().RelatesTo.GetReplaceID(), got.ID)
		}
		r2, err := br.MessageByRemoteID(ctx, "#general", "r2")
		if err != nil || r2 == nil {
			t.Fatalf("message map of r2: %v, %v", r2, err)
		}
		if err := br.RemoteReaction(ctx, "#general", bob, "r2", "🎉", ""); err != nil {
			t.Fatal(err)
		}
		testkit.WaitForEvent(t, alice, room, func(evt *event.Event) bool {
			rel := evt.Content.AsReaction().RelatesTo
			return evt.Type == event.EventReaction && evt.Sender == bobID && rel.EventID == r2.EventID && rel.Key == "🎉"
		}, wait)
		if err := br.RemoteDelete(ctx, "#general", bob, "x1"); err != nil {
			t.Fatal(err)
		}
		testkit.WaitForEvent(t, alice, room, func(evt *event.Event) bool {
			return evt.Type == event.EventRedaction && evt.Redacts == x1
		}, wait)
		if m, err := br.MessageByRemoteID(ctx, "#general", "x1"); err != nil || m != nil {
			t.Errorf("deleted message still mapped: %v, %v", m, err)
		}

		// A failed delivery is reported to the sender.
		network.mu.Lock()
		network.fail = errors.New("the remote server said no")
		network.mu.Unlock()
		failed := send(t, alice, room, text("this one fails"))
		notice := testkit.WaitForEvent(t, alice, room, fromSender(br.AS.Config.BotID(), func(evt *event.Event) bool {
			return evt.Type == event.EventMessage && evt.Content.AsMessage().RelatesTo.GetReplyTo() == failed
		}), wait)
		if body := notice.Content.AsMessage().Body; !strings.Contains(body, "Not delivered to Testnet: the remote server said no") {
			t.Errorf("failure notice = %q", body)
		}

		// The bridge's metrics counted all of it (the registry is the
		// process's, shared by the subtests: compare with the start).
		metrics := testkit.Scrape(t, br.AS.Config.URL+"/metrics")
		for series, want := range map[string]float64{
			`switchboard_bridge_messages_total{appservice="test",direction="matrix_to_remote",outcome="ok"}`:     3, // 2 messages, 1 edit
			`switchboard_bridge_messages_total{appservice="test",direction="matrix_to_remote",outcome="failed"}`: 1,
			`switchboard_bridge_messages_total{appservice="test",direction="remote_to_matrix",outcome="ok"}`:     3,
		} {
			if got := testkit.MetricValue(metrics, series) - testkit.MetricValue(metricsBefore, series); got != want {
				t.Errorf("%s went up by %v, want %v", series, got, want)
			}
		}
		if v := testkit.MetricValue(metrics, `switchboard_bridge_state{appservice="test",state="CONNECTED"}`); v != 1 {
			t.Errorf("bridge state CONNECTED = %v, want 1", v)
		}

		// Membership: the ghosts in the room follow the channel's members.
		carolID, daveID := br.AS.Config.GhostID("carol"), br.AS.Config.GhostID("dave")
		if err := br.SyncMembers(ctx, "#general", []bridge.RemoteUser{{ID: "carol", Name: "Carol"}, {ID: "dave", Name: "Dave"}}); err != nil {
			t.Fatal(err)
		}
		testkit.WaitForJoin(t, alice, room, carolID, wait)
		testkit.WaitForJoin(t, alice, room, daveID, wait)
		waitMembership(t, alice, room, bobID, event.MembershipLeave)
		if err := br.RemoteLeave(ctx, "#general", "dave", "Quit: bye"); err != nil {
			t.Fatal(err)
		}
		waitMembership(t, alice, room, daveID, event.MembershipLeave)
	})
}

// waitMembership waits until cli sees userID's membership in room be m.
func waitMembership(t *testing.T, cli *mautrix.Client, room id.RoomID, userID id.UserID, m event.Membership) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		var member event.MemberEventContent
		err := cli.StateEvent(context.Background(), room, event.StateMember, string(userID), &member)
		if err == nil && member.Membership == m {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's membership in %s is %q (%v), want %q", userID, room, member.Membership, err, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLinkRelayLogin: a room moderator links an existing room with the
// link command; a user without a login is refused until relay mode is on,
// then relayed as "name: text"; after logging in from their management
// room they speak as themselves; unlink removes the ghosts and the bot.
func TestLinkRelayLogin(t *testing.T) {
	ctx := context.Background()
	kit := testkit.Start(t)
	network := newTestNetwork(true)
	br := startBridge(t, kit, network, nil)
	botID := br.AS.Config.BotID()
	alice := kit.NewUser("alice")
	if err := alice.SetDisplayName(ctx, "Alice A."); err != nil {
		t.Fatal(err)
	}
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "ops", Invite: []id.UserID{botID}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	isBot := func(match func(*event.Event) bool) func(*event.Event) bool { return fromSender(botID, match) }
	bodyContains := func(s string) func(*event.Event) bool {
		return func(evt *event.Event) bool {
			return evt.Type == event.EventMessage && strings.Contains(evt.Content.AsMessage().Body, s)
		}
	}

	// Someone without power in the room may not link it.
	mallory := kit.NewUser("mallory")
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: mallory.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, room, botID, wait)
	send(t, mallory, room, text("!test link #ops"))
	testkit.WaitForEvent(t, alice, room, isBot(bodyContains("needs power level 50")), wait)

	send(t, alice, room, text("!test link #missing"))
	testkit.WaitForEvent(t, alice, room, isBot(bodyContains("There is no channel #missing")), wait)
	send(t, alice, room, text("!test link #ops"))
	// The bot has no power to set m.bridge in Alice's room, and says so.
	testkit.WaitForEvent(t, alice, room, isBot(bodyContains("now bridged to #ops. The bridge bot could not mark the room as bridged")), wait)
	network.expect(t, "linked #ops")

	// No login, no relay: refused, with the reason.
	refused := send(t, alice, room, text("hello?"))
	notice := testkit.WaitForEvent(t, alice, room, isBot(func(evt *event.Event) bool {
		return evt.Type == event.EventMessage && evt.Content.AsMessage().RelatesTo.GetReplyTo() == refused
	}), wait)
	if body := notice.Content.AsMessage().Body; !strings.Contains(body, "not logged in") {
		t.Errorf("refusal = %q", body)
	}

	// Relay mode: sent by the relay account, with Alice's name.
	send(t, alice, room, text("!test relay on"))
	testkit.WaitForEvent(t, alice, room, isBot(bodyContains("now relays")), wait)
	send(t, alice, room, text("hello"))
	network.expect(t, "r1 #ops relay: Alice A.: hello")
	send(t, alice, room, &event.MessageEventContent{MsgType: event.MsgEmote, Body: "waves"})
	network.expect(t, "r2 #ops relay: * Alice A. waves")

	// Logging in happens in the management room, not in a portal.
	send(t, alice, room, text("!test login good-token"))
	testkit.WaitForEvent(t, alice, room, isBot(bodyContains("Log in in your management room")), wait)
	dm, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{botID}, IsDirect: true, Preset: "trusted_private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForEvent(t, alice, dm.RoomID, isBot(bodyContains("Hello! I bridge Testnet")), wait)
	send(t, alice, dm.RoomID, text("!test login wrong"))
	testkit.WaitForEvent(t, alice, dm.RoomID, isBot(bodyContains("Login failed: the token is wrong")), wait)
	send(t, alice, dm.RoomID, text("!test login good-token"))
	testkit.WaitForEvent(t, alice, dm.RoomID, isBot(bodyContains("Logged in as Remote alice")), wait)
	send(t, alice, room, text("as myself"))
	network.expect(t, "r3 #ops login:acct-alice: as myself")
	send(t, alice, room, text("!test status"))
	status := testkit.WaitForEvent(t, alice, room, isBot(bodyContains("Testnet bridge")), wait)
	for _, want := range []string{"CONNECTED", "Logged in as Remote alice", "bridged to #ops (relay on)"} {
		if !strings.Contains(status.Content.AsMessage().Body, want) {
			t.Errorf("status %q lacks %q", status.Content.AsMessage().Body, want)
		}
	}

	// Unlink: ghosts and the bot leave the linked room; the portal has no
	// room any more.
	ghost := br.AS.Config.GhostID("bob")
	if err := br.RemoteJoin(ctx, "#ops", bridge.RemoteUser{ID: "bob", Name: "Bob"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, room, ghost, wait)
	send(t, alice, room, text("!test unlink"))
	network.expect(t, "unlinked #ops")
	waitMembership(t, alice, room, ghost, event.MembershipLeave)
	waitMembership(t, alice, room, botID, event.MembershipLeave)
	if _, err := br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: "#ops", Sender: bridge.RemoteUser{ID: "bob"}, ID: "late", Content: text("late")}); !errors.Is(err, bridge.ErrNoRoom) {
		t.Errorf("message to an unlinked portal: %v, want ErrNoRoom", err)
	}
	if p, err := br.PortalByRoom(ctx, room); err != nil || p != nil {
		t.Errorf("room still a portal after unlink: %v, %v", p, err)
	}
}

// TestRestartKeepsPortalsAndMessages: after a restart the portal and the
// message map are still there, so a reply to an earlier message lands.
func TestRestartKeepsPortalsAndMessages(t *testing.T) {
	ctx := context.Background()
	kit := testkit.Start(t)
	network := newTestNetwork(false)
	cfg := &bridge.Config{Config: *kit.FrameworkConfig("test")}
	br := runBridge(t, kit, cfg, network)
	alice := kit.NewUser("alice")
	joined, err := alice.JoinRoom(ctx, id.NewRoomAlias("test_#news", kit.ServerName).String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	network.expect(t, "linked #news")
	first := send(t, alice, joined.RoomID, text("first"))
	network.expect(t, "r1 #news "+string(alice.UserID)+": first")
	br.Stop()

	network2 := newTestNetwork(false)
	network2.next = 1
	br2 := runBridge(t, kit, &bridge.Config{Config: cfg.Config}, network2)
	if _, err := br2.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: "#news", Sender: bridge.RemoteUser{ID: "bob", Name: "Bob"}, ID: "x9", ReplyTo: "r1", Content: text("re: first")}); err != nil {
		t.Fatal(err)
	}
	got := testkit.WaitForEvent(t, alice, joined.RoomID, testkit.HasBody("re: first"), wait)
	if to := got.Content.AsMessage().RelatesTo.GetReplyTo(); to != first {
		t.Errorf("reply after restart points at %q, want %q", to, first)
	}
	send(t, alice, joined.RoomID, text("second"))
	network2.expect(t, "r2 #news "+string(alice.UserID)+": second")
}

// provision calls the provisioning API with a bearer token and returns the
// status code and the decoded JSON body.
func provision(t *testing.T, br *bridge.Bridge, method, path, token, userID, body string) (int, map[string]any) {
	t.Helper()
	u := br.AS.Config.URL + "/_switchboard/provision/v1" + path
	if userID != "" {
		u += "?user_id=" + url.QueryEscape(userID)
	}
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: HTTP %d, body not JSON: %v", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

// TestProvisioning: an integration manager links, lists and unlinks rooms
// for users through the provisioning API, with the shared secret or the
// user's own OpenID token; bad requests get the spec's errors.
func TestProvisioning(t *testing.T) {
	ctx := context.Background()
	kit := testkit.Start(t)
	network := newTestNetwork(false)
	const secret = "integration-manager-secret-0123456789"
	br := startBridge(t, kit, network, func(c *bridge.Config) {
		c.Provisioning.SharedSecret = secret
		c.Permissions = map[string]bridge.Permission{kit.ServerName: bridge.PermissionUser, "@admin:" + kit.ServerName: bridge.PermissionAdmin}
	})
	botID := br.AS.Config.BotID()
	alice, bob := kit.NewUser("alice"), kit.NewUser("bob")
	aliceID := string(alice.UserID)
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	linkBody := fmt.Sprintf(`{"room_id": %q, "channel": "#dev"}`, room.RoomID)
	errcode := func(out map[string]any) any { return out["errcode"] }

	for _, c := range []struct {
		name, token, user string
		status            int
		errcode           string
	}{
		{"no token", "", aliceID, 401, "M_MISSING_TOKEN"},
		{"wrong token", "not-the-secret", aliceID, 401, "M_UNKNOWN_TOKEN"},
		{"secret without user", secret, "", 400, "M_INVALID_PARAM"},
		{"user of another server", secret, "@eve:elsewhere.example", 403, "M_FORBIDDEN"},
	} {
		status, out := provision(t, br, "GET", "/status", c.token, c.user, "")
		if status != c.status || errcode(out) != c.errcode {
			t.Errorf("%s: HTTP %d %v, want %d %s", c.name, status, out, c.status, c.errcode)
		}
	}
	status, out := provision(t, br, "GET", "/status", secret, aliceID, "")
	if status != 200 || out["bot"] != string(botID) || out["state"].(map[string]any)["state_event"] != "CONNECTED" {
		t.Errorf("status: HTTP %d %v", status, out)
	}

	// Linking needs the bot in the room, and power in it.
	if status, out := provision(t, br, "POST", "/link", secret, aliceID, linkBody); status != 403 || !strings.Contains(fmt.Sprint(out["error"]), "invite it first") {
		t.Errorf("link before the bot is invited: HTTP %d %v", status, out)
	}
	if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: botID}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, room.RoomID, botID, wait)
	if status, out := provision(t, br, "POST", "/link", secret, string(bob.UserID), linkBody); status != 403 || errcode(out) != "M_FORBIDDEN" {
		t.Errorf("link by a user without power: HTTP %d %v", status, out)
	}
	if status, out := provision(t, br, "POST", "/link", secret, aliceID, `{"room_id": 5}`); status != 400 || errcode(out) != "M_NOT_JSON" {
		t.Errorf("link with a bad body: HTTP %d %v", status, out)
	}
	if status, out := provision(t, br, "POST", "/link", secret, aliceID, fmt.Sprintf(`{"room_id": %q, "channel": "#missing"}`, room.RoomID)); status != 404 || errcode(out) != "M_NOT_FOUND" {
		t.Errorf("link to an unknown channel: HTTP %d %v", status, out)
	}
	status, out = provision(t, br, "POST", "/link", secret, aliceID, linkBody)
	if status != 200 || out["portal"].(map[string]any)["portal_id"] != "#dev" {
		t.Fatalf("link: HTTP %d %v", status, out)
	}
	network.expect(t, "linked #dev")
	if status, out := provision(t, br, "POST", "/link", secret, aliceID, linkBody); status != 409 || errcode(out) != bridge.ErrcodeAlreadyBridged {
		t.Errorf("second link: HTTP %d %v", status, out)
	}
	send(t, alice, room.RoomID, text("linked through the API"))
	network.expect(t, "r1 #dev "+aliceID+": linked through the API")

	// Listing: users see the portals they are in; admins all of them.
	carol := kit.NewUser("carol")
	for _, c := range []struct {
		user string
		n    int
	}{{aliceID, 1}, {string(carol.UserID), 0}, {"@admin:" + kit.ServerName, 1}} {
		status, out := provision(t, br, "GET", "/portals", secret, c.user, "")
		if portals, _ := out["portals"].([]any); status != 200 || len(portals) != c.n {
			t.Errorf("portals for %s: HTTP %d %v, want %d", c.user, status, out, c.n)
		}
	}

	// The user's own OpenID token works without the secret.
	openID, err := alice.RequestOpenIDToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	status, out = provision(t, br, "GET", "/status", openID.AccessToken, "", "")
	if user, _ := out["user"].(map[string]any); status != 200 || user["user_id"] != aliceID {
		t.Errorf("status with an OpenID token: HTTP %d %v", status, out)
	}
	if status, out := provision(t, br, "GET", "/status", openID.AccessToken, string(bob.UserID), ""); status != 401 {
		t.Errorf("OpenID token of alice claiming bob: HTTP %d %v", status, out)
	}

	unlinkBody := fmt.Sprintf(`{"room_id": %q}`, room.RoomID)
	if status, out := provision(t, br, "POST", "/unlink", openID.AccessToken, "", unlinkBody); status != 200 {
		t.Fatalf("unlink: HTTP %d %v", status, out)
	}
	network.expect(t, "unlinked #dev")
	waitMembership(t, alice, room.RoomID, botID, event.MembershipLeave)
	if status, out := provision(t, br, "POST", "/unlink", secret, aliceID, unlinkBody); status != 404 || errcode(out) != "M_NOT_FOUND" {
		t.Errorf("second unlink: HTTP %d %v", status, out)
	}
}

// TestProvisioningDisabled: "disable" turns the API off.
func TestProvisioningDisabled(t *testing.T) {
	kit := testkit.Start(t)
	br := startBridge(t, kit, newTestNetwork(false), func(c *bridge.Config) { c.Provisioning.SharedSecret = "disable" })
	if status, out := provision(t, br, "GET", "/status", "disable", "@alice:"+kit.ServerName, ""); status != 404 {
		t.Errorf("disabled API: HTTP %d %v", status, out)
	}
}

// TestDirectChat: a remote user writes to a Matrix user privately; the
// network makes a direct-chat portal, created by the remote user's ghost,
// and the conversation flows both ways.
func TestDirectChat(t *testing.T) {
	ctx := context.Background()
	kit := testkit.Start(t)
	network := newTestNetwork(false)
	br := startBridge(t, kit, network, nil)
	alice := kit.NewUser("alice")
	bob := bridge.RemoteUser{ID: "bob", Name: "Bob"}
	ghost, err := br.Ghost(ctx, bob)
	if err != nil {
		t.Fatal(err)
	}
	portal, err := br.Portal(ctx, "dm:bob:"+string(alice.UserID))
	if err != nil {
		t.Fatal(err)
	}
	room, err := br.EnsureRoom(ctx, portal, &bridge.ChannelInfo{ID: portal.ID, Name: "Bob"},
		bridge.RoomOptions{Invite: []id.UserID{alice.UserID}, DirectWith: ghost})
	if err != nil {
		t.Fatal(err)
	}
	network.expect(t, "linked "+portal.ID)
	if portal.DMUser() != alice.UserID {
		t.Errorf("DMUser = %q", portal.DMUser())
	}
	// Alice's client sees an invite marked direct, from the ghost.
	resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	direct := false
	if inv := resp.Rooms.Invite[room]; inv != nil {
		for _, evt := range inv.State.Events {
			_ = evt.Content.ParseRaw(evt.Type)
			if evt.Type == event.StateMember && evt.GetStateKey() == string(alice.UserID) {
				direct = evt.Content.AsMember().IsDirect && evt.Sender == ghost.UserID
			}
		}
	}
	if !direct {
		t.Errorf("alice has no direct invite from %s to %s: %+v", ghost.UserID, room, resp.Rooms.Invite[room])
	}
	if _, err := alice.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	if _, err := br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: portal.ID, Sender: bob, ID: "p1", Content: text("psst")}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitForEvent(t, alice, room, fromSender(ghost.UserID, testkit.HasBody("psst")), wait)
	send(t, alice, room, text("what?"))
	network.expect(t, "r1 "+portal.ID+" "+string(alice.UserID)+": what?")
}
