package framework_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// recorder collects the bodies of the messages an appservice handled.
type recorder struct {
	mu     sync.Mutex
	bodies []string
	seen   chan struct{}
}

func newRecorder() *recorder { return &recorder{seen: make(chan struct{}, 1)} }

func (r *recorder) handle(_ context.Context, evt *event.Event) {
	if evt.Type != event.EventMessage {
		return
	}
	r.mu.Lock()
	r.bodies = append(r.bodies, evt.Content.AsMessage().Body)
	r.mu.Unlock()
	select {
	case r.seen <- struct{}{}:
	default:
	}
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bodies)
}

// waitFor waits until the recorder holds n bodies.
func (r *recorder) waitFor(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for len(r.list()) < n {
		select {
		case <-r.seen:
		case <-deadline:
			t.Fatalf("handled %d of %d messages in time: %v", len(r.list()), n, r.list())
		}
	}
}

func newApp(t *testing.T, cfg *framework.Config, h framework.EventHandler) *framework.Appservice {
	t.Helper()
	app, err := framework.New(context.Background(), cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	app.OnEvent(h)
	return app
}

// setupRoom makes a room with alice and the appservice's bot in it.
func setupRoom(t *testing.T, kit *testkit.Kit, app *framework.Appservice) (*mautrix.Client, id.RoomID) {
	t.Helper()
	alice := kit.NewUser("alice")
	room, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Invite: []id.UserID{app.Config.BotID()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Bot().JoinRoomByID(context.Background(), room.RoomID); err != nil {
		t.Fatal(err)
	}
	return alice, room.RoomID
}

// The bot is stopped while messages keep coming, and started again: every
// message is handled exactly once, in order — on SQLite and PostgreSQL.
func TestRestartMidStreamLosesAndRepeatsNothing(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		kit := testkit.Start(t)
		cfg := kit.FrameworkConfig("rs")
		cfg.Database = uri
		first := newRecorder()
		app := newApp(t, cfg, first.handle)
		kit.RegisterAppservice(app.Registration)
		if err := app.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		alice, roomID := setupRoom(t, kit, app)

		const total = 150
		var want []string
		send := func(from, to int) {
			for i := from; i < to; i++ {
				body := fmt.Sprintf("message %03d", i)
				want = append(want, body)
				if _, err := alice.SendText(context.Background(), roomID, body); err != nil {
					t.Fatal(err)
				}
			}
		}
		send(0, 50)
		first.waitFor(t, 10, 10*time.Second)
		app.Stop() // mid-stream: some of the first 50 may not have arrived yet
		send(50, total)

		second := newRecorder()
		cfg2 := *cfg
		app2 := newApp(t, &cfg2, second.handle)
		if err := app2.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer app2.Stop()
		deadline := time.Now().Add(20 * time.Second)
		for len(first.list())+len(second.list()) < total && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // a duplicate would show up by now
		got := append(first.list(), second.list()...)
		if !slices.Equal(got, want) {
			t.Fatalf("handled %d messages (%d before the restart, %d after), want %d exactly once in order:\n%v",
				len(got), len(first.list()), len(second.list()), total, got)
		}
	})
}

// A transaction the homeserver sends again — its answer lost, before or
// after a restart of the appservice — is acknowledged and not handled
// again; a wrong hs_token is refused.
func TestTransactionDeduplicatedAcrossRestart(t *testing.T) {
	kit := testkit.Start(t)
	cfg := kit.FrameworkConfig("dd")
	rec := newRecorder()
	app := newApp(t, cfg, rec.handle)
	kit.RegisterAppservice(app.Registration)
	if err := app.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	put := func(txnID, token string) int {
		body := `{"events":[{"type":"m.room.message","room_id":"!r:x","sender":"@u:x","event_id":"$e1","origin_server_ts":1,
			"content":{"msgtype":"m.text","body":"once"}}]}`
		req, _ := http.NewRequest(http.MethodPut, "http://"+cfg.Listen+"/_matrix/app/v1/transactions/"+txnID, bytes.NewBufferString(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put("t1", "wrong"); code != http.StatusForbidden {
		t.Errorf("wrong hs_token: HTTP %d, want 403", code)
	}
	if code := put("t1", app.Registration.ServerToken); code != http.StatusOK {
		t.Fatalf("first delivery: HTTP %d", code)
	}
	rec.waitFor(t, 1, 5*time.Second)
	if code := put("t1", app.Registration.ServerToken); code != http.StatusOK {
		t.Fatalf("resent: HTTP %d", code)
	}
	app.Stop()
	app2 := newApp(t, cfg, rec.handle)
	if err := app2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer app2.Stop()
	if code := put("t1", app2.Registration.ServerToken); code != http.StatusOK {
		t.Fatalf("resent after restart: HTTP %d", code)
	}
	time.Sleep(200 * time.Millisecond)
	if got := rec.list(); !slices.Equal(got, []string{"once"}) {
		t.Fatalf("handled %v, want the message once", got)
	}
}

// Events accepted but not handled when the appservice stops (a handler
// still busy after the drain timeout) are handled after the next start,
// in order, and the ones already handled are not.
func TestUnhandledEventsSurviveStop(t *testing.T) {
	defer framework.SetDrainTimeout(300 * time.Millisecond)()
	kit := testkit.Start(t)
	cfg := kit.FrameworkConfig("ub")
	first := newRecorder()
	blocked := make(chan struct{})
	app := newApp(t, cfg, func(ctx context.Context, evt *event.Event) {
		if evt.Type == event.EventMessage && evt.Content.AsMessage().Body == "slow" {
			close(blocked)
			<-ctx.Done() // a handler that takes longer than Stop allows
			return
		}
		first.handle(ctx, evt)
	})
	kit.RegisterAppservice(app.Registration)
	if err := app.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	alice, roomID := setupRoom(t, kit, app)
	for _, body := range []string{"one", "slow", "three"} {
		if _, err := alice.SendText(context.Background(), roomID, body); err != nil {
			t.Fatal(err)
		}
	}
	first.waitFor(t, 1, 10*time.Second)
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow message never reached its handler")
	}
	// "three" is in the inbox behind "slow" (same room) by the time the
	// homeserver has sent it; wait for that.
	deadline := time.Now().Add(10 * time.Second)
	for kit.HS.HS.Pusher.Stats()[0].Lag > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	app.Stop()

	second := newRecorder()
	app2 := newApp(t, cfg, second.handle)
	if err := app2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer app2.Stop()
	second.waitFor(t, 2, 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	if got := append(first.list(), second.list()...); !slices.Equal(got, []string{"one", "slow", "three"}) {
		t.Fatalf("handled %v, want one, slow, three once each", got)
	}
}

// Ghosts are registered on demand with their profile; the profile is
// written only when it changes, and only ghosts of the namespace qualify.
func TestEnsureGhost(t *testing.T) {
	kit := testkit.Start(t)
	cfg := kit.FrameworkConfig("gh")
	app := newApp(t, cfg, func(context.Context, *event.Event) {})
	kit.RegisterAppservice(app.Registration)
	ctx := context.Background()
	viewer := kit.NewUser("viewer")
	ghost := cfg.GhostID("Alice Smith")
	if ghost != id.UserID("@gh__alice=20_smith:"+cfg.ServerName) {
		t.Errorf("GhostID = %s", ghost)
	}
	avatar := id.MustParseContentURI("mxc://" + cfg.ServerName + "/avatar1")
	profile := func() (string, id.ContentURIString) {
		t.Helper()
		p, err := viewer.GetProfile(ctx, ghost)
		if err != nil {
			t.Fatal(err)
		}
		return p.DisplayName, p.AvatarURL.CUString()
	}
	intent, err := app.EnsureGhost(ctx, ghost, "Alice", avatar)
	if err != nil {
		t.Fatal(err)
	}
	if name, av := profile(); name != "Alice" || av != avatar.CUString() {
		t.Fatalf("profile = %q %q", name, av)
	}
	if _, err := app.EnsureGhost(ctx, ghost, "Alice S.", avatar); err != nil {
		t.Fatal(err)
	}
	if name, _ := profile(); name != "Alice S." {
		t.Fatalf("renamed profile = %q", name)
	}
	// Changed behind the framework's back: the same profile again is not
	// written, as nothing changed from what the framework last set.
	if err := intent.SetDisplayName(ctx, "Someone else"); err != nil {
		t.Fatal(err)
	}
	if _, err := app.EnsureGhost(ctx, ghost, "Alice S.", avatar); err != nil {
		t.Fatal(err)
	}
	if name, _ := profile(); name != "Someone else" {
		t.Fatalf("an unchanged profile was written again: %q", name)
	}
	if _, err := app.EnsureGhost(ctx, "@viewer:"+id.UserID(cfg.ServerName), "x", id.ContentURI{}); err == nil {
		t.Error("EnsureGhost accepted a user outside the ghost namespace")
	}
}

// Config errors name the key.
func TestConfigValidate(t *testing.T) {
	good := func() *framework.Config {
		return &framework.Config{HomeserverURL: "http://127.0.0.1:8008", ServerName: "example.org", ID: "bot",
			Listen: "127.0.0.1:29300", Registration: "reg.yaml", BotLocalpart: "bot", GhostPrefix: "bot_",
			Database: "sqlite:bot.db"}
	}
	c := good()
	if err := c.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if c.URL != "http://127.0.0.1:29300" || c.Workers != 16 {
		t.Errorf("defaults: url %q, workers %d", c.URL, c.Workers)
	}
	for _, tc := range []struct {
		key    string
		mutate func(*framework.Config)
	}{
		{"homeserver_url", func(c *framework.Config) { c.HomeserverURL = "ftp://x" }},
		{"server_name", func(c *framework.Config) { c.ServerName = "a/b" }},
		{"id", func(c *framework.Config) { c.ID = "" }},
		{"listen", func(c *framework.Config) { c.Listen = "nowhere" }},
		{"bot_localpart", func(c *framework.Config) { c.BotLocalpart = "Bot!" }},
		{"bot_localpart", func(c *framework.Config) { c.BotLocalpart = "bot_x" }},
		{"bot_avatar", func(c *framework.Config) { c.BotAvatar = "https://x/y.png" }},
		{"database", func(c *framework.Config) { c.Database = "mysql://x" }},
		{"workers", func(c *framework.Config) { c.Workers = -1 }},
	} {
		c := good()
		tc.mutate(c)
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.key+":") {
			t.Errorf("%s: error %v, want one naming the key", tc.key, err)
		}
	}
}
