package testkit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

const wait = 15 * time.Second

// serve runs handler on ln until the test ends.
func serve(t *testing.T, ln net.Listener, handler http.Handler) {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// receive returns the first event from events that match accepts, skipping
// the others, and fails the test if none comes within wait.
func receive(t *testing.T, events <-chan *event.Event, match func(*event.Event) bool, what string) *event.Event {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case evt := <-events:
			if match(evt) {
				return evt
			}
		case <-timeout:
			t.Fatalf("the appservice never received %s", what)
			return nil
		}
	}
}

func invitedIs(userID id.UserID) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		m, ok := evt.Content.Parsed.(*event.MemberEventContent)
		return evt.Type == event.StateMember && ok && evt.GetStateKey() == string(userID) && m.Membership == event.MembershipInvite
	}
}

// TestAppservice is the path every bridge test takes: a mautrix AppService
// registered on the kit's homeserver is invited by a user, joins, receives
// the user's message in a transaction and answers; the user sees the
// answer.
func TestAppservice(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		ctx := t.Context()
		kit := testkit.Start(t, testkit.WithDatabase(uri))
		reg := kit.NewRegistration("echo", "_echo_")
		url, ln := kit.ListenAppservice()
		reg.URL = url
		as, err := appservice.CreateFull(appservice.CreateOpts{
			Registration: reg, HomeserverDomain: kit.ServerName, HomeserverURL: kit.URL,
		})
		if err != nil {
			t.Fatal(err)
		}
		serve(t, ln, as.Router)
		kit.RegisterAppservice(reg)

		// Both directions work: the homeserver reaches the appservice with
		// its hs_token, the appservice the homeserver with its as_token.
		if _, err := as.BotClient().AppservicePing(ctx, reg.ID, "testkit-ping"); err != nil {
			t.Fatalf("ping through the homeserver: %v", err)
		}

		alice := kit.NewUser("alice")
		bot := as.BotIntent()
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		invite := receive(t, as.Events, invitedIs(bot.UserID), "the invite of its bot")
		if invite.RoomID != room.RoomID || invite.Sender != alice.UserID {
			t.Fatalf("invite: room %s from %s, want %s from %s", invite.RoomID, invite.Sender, room.RoomID, alice.UserID)
		}
		if _, err := bot.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("bot join: %v", err)
		}
		testkit.WaitForJoin(t, alice, room.RoomID, bot.UserID, wait)

		if _, err := alice.SendText(ctx, room.RoomID, "hello bot"); err != nil {
			t.Fatal(err)
		}
		msg := receive(t, as.Events, testkit.HasBody("hello bot"), `alice's "hello bot"`)
		if msg.Sender != alice.UserID || msg.RoomID != room.RoomID {
			t.Fatalf(`"hello bot" arrived from %s in %s, want %s in %s`, msg.Sender, msg.RoomID, alice.UserID, room.RoomID)
		}

		if _, err := bot.SendText(ctx, room.RoomID, "hello alice"); err != nil {
			t.Fatal(err)
		}
		answer := testkit.WaitForEvent(t, alice, room.RoomID, testkit.HasBody("hello alice"), wait)
		if answer.Sender != bot.UserID {
			t.Fatalf("the answer came from %s, want the bot %s", answer.Sender, bot.UserID)
		}

		// The namespace is the appservice's: it may create ghosts in it and
		// act as them, but not outside it.
		ghost := as.Intent(id.NewUserID("_echo_carol", kit.ServerName))
		if _, err := ghost.JoinRoomByID(ctx, room.RoomID); err == nil {
			t.Fatal("an uninvited ghost joined a private room")
		}
		if err := ghost.EnsureRegistered(ctx); err != nil {
			t.Fatalf("registering a ghost in the namespace: %v", err)
		}
		outside := kit.ASClient(reg)
		_, _, err = outside.Register(ctx, &mautrix.ReqRegister[any]{Username: "carol", Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
		if !errors.Is(err, mautrix.MExclusive) {
			t.Fatalf("registering @carol outside the namespace: %v, want M_EXCLUSIVE", err)
		}
	})
}

// recorder is an appservice as a plain HTTP handler: it checks the
// hs_token and keeps the bodies of the messages it is sent, once per
// transaction ID (the homeserver resends a transaction it is unsure of).
type recorder struct {
	hsToken string
	mu      sync.Mutex
	txns    map[string]bool
	bodies  []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Header.Get("Authorization") != "Bearer "+r.hsToken {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"bad hs_token"}`))
		return
	}
	txnID, ok := strings.CutPrefix(req.URL.Path, "/_matrix/app/v1/transactions/")
	if req.Method == http.MethodPut && ok {
		var txn struct {
			Events []*event.Event `json:"events"`
		}
		if err := json.NewDecoder(req.Body).Decode(&txn); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		if !r.txns[txnID] {
			r.txns[txnID] = true
			for _, evt := range txn.Events {
				if body, ok := evt.Content.Raw["body"].(string); ok {
					r.bodies = append(r.bodies, body)
				}
			}
		}
		r.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("{}"))
}

// waitFor waits until the appservice has received body.
func (r *recorder) waitFor(t *testing.T, body string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		got := append([]string(nil), r.bodies...)
		r.mu.Unlock()
		for _, b := range got {
			if b == body {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Fatalf("the appservice never received %q (it got %q)", body, r.bodies)
}

// TestRestart: after Restart the homeserver is at the same URL with the
// same rooms, accounts, access tokens and registrations.
func TestRestart(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		ctx := t.Context()
		kit := testkit.Start(t, testkit.WithDatabase(uri))
		reg := kit.NewRegistration("recorder", "_rec_")
		url, ln := kit.ListenAppservice()
		reg.URL = url
		rec := &recorder{hsToken: reg.ServerToken, txns: map[string]bool{}}
		serve(t, ln, rec)
		kit.RegisterAppservice(reg)

		alice := kit.NewUser("alice")
		bot := kit.ASClient(reg)
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bot.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, room.RoomID, "before restart"); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, "before restart")

		before := kit.URL
		firstHS := kit.HS
		kit.Restart()
		if kit.URL != before || kit.HS == firstHS {
			t.Fatalf("after Restart: URL %s (was %s), new process %v", kit.URL, before, kit.HS != firstHS)
		}

		// alice's client, made before the restart, still works and sees the
		// old message.
		testkit.WaitForEvent(t, alice, room.RoomID, testkit.HasBody("before restart"), wait)
		if _, err := alice.SendText(ctx, room.RoomID, "after restart"); err != nil {
			t.Fatalf("sending with a token issued before the restart: %v", err)
		}
		// The registration survived: transactions still flow and the
		// as_token is still valid.
		rec.waitFor(t, "after restart")
		if who, err := bot.Whoami(ctx); err != nil || who.UserID != bot.UserID {
			t.Fatalf("the bot after the restart: %+v, %v", who, err)
		}
		// Accounts made before and after the restart meet in the old room.
		bob := kit.NewUser("bob")
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		testkit.WaitForJoin(t, alice, room.RoomID, bob.UserID, wait)
	})
}

// TestReregister: an appservice that comes back on another port is
// registered again under its id, and the next events go to the new URL.
func TestReregister(t *testing.T) {
	ctx := t.Context()
	kit := testkit.Start(t)
	reg := kit.NewRegistration("moving", "_mv_")
	oldURL, oldLn := kit.ListenAppservice()
	reg.URL = oldURL
	old := &recorder{hsToken: reg.ServerToken, txns: map[string]bool{}}
	serve(t, oldLn, old)
	kit.RegisterAppservice(reg)

	alice := kit.NewUser("alice")
	bot := kit.ASClient(reg)
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bot.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, room.RoomID, "one"); err != nil {
		t.Fatal(err)
	}
	old.waitFor(t, "one")

	newURL, newLn := kit.ListenAppservice()
	reg.URL = newURL
	moved := &recorder{hsToken: reg.ServerToken, txns: map[string]bool{}}
	serve(t, newLn, moved)
	kit.RegisterAppservice(reg)
	if _, err := alice.SendText(ctx, room.RoomID, "two"); err != nil {
		t.Fatal(err)
	}
	moved.waitFor(t, "two")
	old.mu.Lock()
	defer old.mu.Unlock()
	if slices.Contains(old.bodies, "two") {
		t.Errorf("the old URL got %q too", old.bodies)
	}
}

// fatalRecorder stands in for a test to check that the helpers fail: it
// keeps the message and ends the goroutine, as t.Fatalf does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fails runs fn with a fatalRecorder and returns the failure message, or
// fails t if fn did not fail.
func fails(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	if r.msg == "" {
		t.Fatal("expected a failure, got none")
	}
	return r.msg
}

// TestHelpersFail: the wait helpers and RegisterAppservice fail the test,
// saying why, rather than passing vacuously; a refused registration leaves
// the kit as it was.
func TestHelpersFail(t *testing.T) {
	ctx := context.Background()
	kit := testkit.Start(t)
	alice := kit.NewUser("alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, room.RoomID, "something else"); err != nil {
		t.Fatal(err)
	}
	const short = 300 * time.Millisecond

	msg := fails(t, func(tb testing.TB) {
		testkit.WaitForEvent(tb, alice, room.RoomID, testkit.HasBody("never sent"), short)
	})
	if !strings.Contains(msg, "saw no matching event") || !strings.Contains(msg, `"something else"`) {
		t.Errorf("WaitForEvent's failure does not list what alice saw: %s", msg)
	}

	outsider := kit.NewUser("outsider")
	msg = fails(t, func(tb testing.TB) {
		testkit.WaitForEvent(tb, outsider, room.RoomID, testkit.HasBody("something else"), short)
	})
	if !strings.Contains(msg, "M_FORBIDDEN") {
		t.Errorf("WaitForEvent by a non-member does not say it was refused: %s", msg)
	}

	msg = fails(t, func(tb testing.TB) {
		testkit.WaitForJoin(tb, alice, room.RoomID, outsider.UserID, short)
	})
	if !strings.Contains(msg, "no membership") {
		t.Errorf("WaitForJoin's failure: %s", msg)
	}

	first := kit.NewRegistration("first", "_clash_")
	second := kit.NewRegistration("second", "_clash_")
	if first.AppToken == first.ServerToken || first.AppToken == second.AppToken || len(first.AppToken) < 22 || len(first.ServerToken) < 22 {
		t.Errorf("tokens are not distinct 128-bit secrets: %d and %d characters", len(first.AppToken), len(first.ServerToken))
	}
	kit.RegisterAppservice(first)
	msg = fails(t, func(tb testing.TB) {
		kit.WithTB(tb).RegisterAppservice(second)
	})
	if !strings.Contains(msg, `register appservice "second"`) || !strings.Contains(msg, "second.yaml") {
		t.Errorf("RegisterAppservice's failure does not name the registration and its file: %s", msg)
	}
	// The refused file is gone, so the homeserver starts again.
	kit.Restart()
	if who, err := kit.ASClient(first).Whoami(ctx); err != nil || who.UserID != id.NewUserID("_clash_bot", kit.ServerName) {
		t.Fatalf("the first appservice after the restart: %+v, %v", who, err)
	}
}
