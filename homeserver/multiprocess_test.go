package homeserver_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

const (
	// longPoll is the /sync timeout: a wake-up that does not cross
	// processes shows up as a sync that takes this long.
	longPoll = 20 * time.Second
	// settle is how long a long-poll runs before the write, so it is
	// surely waiting rather than about to read the database.
	settle = 500 * time.Millisecond
	// maxWake is the latency the issue allows ("at once"), generous for a
	// shared 2-core machine; the measured figure is logged.
	maxWake = 1500 * time.Millisecond
)

// TestMultiProcessSyncWake runs two homeserver processes on one PostgreSQL
// database, as behind a load balancer, and checks that a message written
// through one wakes long-polling syncs served by the other.
func TestMultiProcessSyncWake(t *testing.T) {
	uri := testdb.PostgresURI(t)
	// One homeserver, two processes: same server name (the default) and
	// the same signing key, each with its own data directory.
	key := filepath.Join(t.TempDir(), "signing.key")
	sameKey := func(c *config.Config) { c.SigningKeyPath = key }
	a := hstest.Start(t, uri, sameKey)
	b := hstest.Start(t, uri, sameKey)
	ctx := context.Background()

	const password = "multi process password"
	a.CreateUser("alice", password, false)
	a.CreateUser("bob", password, false)
	a.CreateUser("dave", password, false)
	aliceA := a.Login("alice", password)
	bobB := b.Login("bob", password)

	created, err := aliceA.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	if _, err := bobB.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("bob joins through B: %v", err)
	}

	t.Run("A to B", func(t *testing.T) {
		expectWoken(t, bobB, roomID, func() { send(t, aliceA, roomID, "hello from A") }, "hello from A")
	})
	t.Run("B to A", func(t *testing.T) {
		expectWoken(t, aliceA, roomID, func() { send(t, bobB, roomID, "hello from B") }, "hello from B")
	})
	// Dave joins through A, so B's cached copy of the room has not seen
	// him, and his sync on B skips the room (a filter) so B does not load
	// it again before the next message: that message's wake-up must name
	// dave rather than leave B to work out the room's members.
	t.Run("member joined through the other process", func(t *testing.T) {
		daveA, daveB := a.Login("dave", password), b.Login("dave", password)
		if _, err := daveA.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatalf("dave joins through A: %v", err)
		}
		resp, err := daveB.FullSyncRequest(ctx, mautrix.ReqSync{FilterID: `{"room":{"rooms":[]}}`})
		if err != nil {
			t.Fatal(err)
		}
		polled := pollUntil(daveB, resp.NextBatch, timelineHas(roomID, "welcome dave"))
		time.Sleep(settle)
		start := time.Now()
		send(t, aliceA, roomID, "welcome dave")
		checkWake(t, <-polled, start)
	})
	// The invitee's own sync learns of the invite at once, across processes.
	t.Run("invite", func(t *testing.T) {
		a.CreateUser("carol", password, false)
		carolB := b.Login("carol", password)
		since := caughtUp(t, carolB)
		polled := pollUntil(carolB, since, func(r *mautrix.RespSync) bool { return r.Rooms.Invite[roomID] != nil })
		time.Sleep(settle)
		start := time.Now()
		if _, err := aliceA.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: carolB.UserID}); err != nil {
			t.Fatal(err)
		}
		checkWake(t, <-polled, start)
	})
}

func send(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) {
	t.Helper()
	if _, err := cli.SendText(context.Background(), roomID, body); err != nil {
		t.Fatalf("%s sends: %v", cli.UserID, err)
	}
}

// expectWoken long-polls /sync for cli, runs write once the poll is
// waiting, and checks that the poll returns body at once.
func expectWoken(t *testing.T, cli *mautrix.Client, roomID id.RoomID, write func(), body string) {
	t.Helper()
	since := caughtUp(t, cli)
	polled := pollUntil(cli, since, timelineHas(roomID, body))
	time.Sleep(settle)
	start := time.Now()
	write()
	checkWake(t, <-polled, start)
}

// timelineHas matches a sync response with a message of that body.
func timelineHas(roomID id.RoomID, body string) func(*mautrix.RespSync) bool {
	return func(r *mautrix.RespSync) bool {
		if jr := r.Rooms.Join[roomID]; jr != nil {
			for _, evt := range jr.Timeline.Events {
				if evt.Type == event.EventMessage && evt.Content.Raw["body"] == body {
					return true
				}
			}
		}
		return false
	}
}

// caughtUp syncs until nothing is new and returns the since token.
func caughtUp(t *testing.T, cli *mautrix.Client) string {
	t.Helper()
	resp, err := cli.SyncRequest(context.Background(), 0, "", "", false, "")
	if err != nil {
		t.Fatalf("initial sync of %s: %v", cli.UserID, err)
	}
	return resp.NextBatch
}

type pollResult struct {
	started, returned time.Time // of the request that brought the update
	err               error
}

// pollUntil long-polls /sync in the background until a response passes
// found, and reports the request that brought it.
func pollUntil(cli *mautrix.Client, since string, found func(*mautrix.RespSync) bool) <-chan pollResult {
	out := make(chan pollResult, 1)
	go func() {
		deadline := time.Now().Add(longPoll + 10*time.Second)
		for time.Now().Before(deadline) {
			started := time.Now()
			resp, err := cli.SyncRequest(context.Background(), int(longPoll/time.Millisecond), since, "", false, "")
			if err != nil {
				out <- pollResult{err: err}
				return
			}
			if found(resp) {
				out <- pollResult{started: started, returned: time.Now()}
				return
			}
			since = resp.NextBatch
		}
		out <- pollResult{err: context.DeadlineExceeded}
	}()
	return out
}

func checkWake(t *testing.T, res pollResult, writeStart time.Time) {
	t.Helper()
	if res.err != nil {
		t.Fatalf("sync: %v", res.err)
	}
	latency := res.returned.Sub(writeStart)
	if latency > maxWake {
		t.Fatalf("the update reached the long-polling sync %v after the write began (limit %v; a sync that is never woken takes %v)",
			latency, maxWake, longPoll)
	}
	if waited := writeStart.Sub(res.started); waited < settle/2 {
		t.Fatalf("the sync that returned the update started only %v before the write: it was not long-polling", waited)
	}
	t.Logf("wake latency (write request start → sync response): %v", latency.Round(100*time.Microsecond))
}
