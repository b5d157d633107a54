package storage_test

import (
	"errors"
	"slices"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// The queue row's life: created once at a position, claimed by one owner
// at a time, a transaction recorded before it is sent and acknowledged by
// its ID, and no write by an owner that lost the lease.
func TestAppserviceStreamLifecycle(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		if _, err := db.GetAppserviceStream(ctx, "irc"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing row: %v", err)
		}
		mustOK := func(what string, ok bool, err error) {
			t.Helper()
			if err != nil || !ok {
				t.Fatalf("%s: ok=%v err=%v", what, ok, err)
			}
		}
		refused := func(what string, ok bool, err error) {
			t.Helper()
			if err != nil || ok {
				t.Fatalf("%s: ok=%v err=%v, want refused", what, ok, err)
			}
		}
		get := func() *storage.AppserviceStream {
			t.Helper()
			s, err := db.GetAppserviceStream(ctx, "irc")
			if err != nil {
				t.Fatal(err)
			}
			return s
		}

		created, err := db.EnsureAppserviceStream(ctx, "irc", 10)
		mustOK("create", created, err)
		created, err = db.EnsureAppserviceStream(ctx, "irc", 99)
		refused("create again", created, err)
		if s := get(); s.AckedPos != 10 || s.TxnID != 1 || s.InFlight() || s.LeaseOwner != "" {
			t.Fatalf("new row = %+v", s)
		}

		ok, err := db.SkipAppserviceStream(ctx, "irc", "a", 12)
		refused("skip without the lease", ok, err)
		ok, err = db.ClaimAppserviceStream(ctx, "irc", "a", 1000, 2000)
		mustOK("claim", ok, err)
		ok, err = db.ClaimAppserviceStream(ctx, "irc", "b", 1500, 2500)
		refused("claim a held lease", ok, err)
		ok, err = db.ClaimAppserviceStream(ctx, "irc", "a", 1500, 2500)
		mustOK("renew", ok, err)

		ok, err = db.SkipAppserviceStream(ctx, "irc", "a", 12)
		mustOK("skip", ok, err)
		ok, err = db.SkipAppserviceStream(ctx, "irc", "a", 11)
		refused("skip backwards", ok, err)
		ok, err = db.StartAppserviceTxn(ctx, "irc", "a", 15, 20, []int64{16, 18}, nil)
		mustOK("start transaction", ok, err)
		if s := get(); s.AckedPos != 15 || !s.InFlight() || s.TxnUpto != 20 || !slices.Equal(s.TxnEvents, []int64{16, 18}) {
			t.Fatalf("in flight = %+v", s)
		}
		ok, err = db.StartAppserviceTxn(ctx, "irc", "a", 20, 30, []int64{25}, nil)
		refused("a second transaction in flight", ok, err)
		ok, err = db.SkipAppserviceStream(ctx, "irc", "a", 25)
		refused("skip while in flight", ok, err)

		ok, err = db.AppserviceTxnFailed(ctx, "irc", "a", 3000, "HTTP 502")
		mustOK("failure", ok, err)
		ok, err = db.AppserviceTxnFailed(ctx, "irc", "a", 4000, "connection refused")
		mustOK("failure", ok, err)
		if s := get(); s.Failures != 2 || s.DownSinceTS != 3000 || s.LastError != "connection refused" {
			t.Fatalf("after failures = %+v", s)
		}

		// The lease lapses and b takes over: a can no longer write.
		ok, err = db.ClaimAppserviceStream(ctx, "irc", "b", 3000, 4000)
		mustOK("take over a lapsed lease", ok, err)
		ok, err = db.AckAppserviceTxn(ctx, "irc", "a", 1, 5000, nil)
		refused("ack by the old owner", ok, err)
		ok, err = db.AckAppserviceTxn(ctx, "irc", "b", 2, 5000, nil)
		refused("ack of another transaction", ok, err)
		ok, err = db.AckAppserviceTxn(ctx, "irc", "b", 1, 5000, nil)
		mustOK("ack", ok, err)
		s := get()
		if s.AckedPos != 20 || s.TxnID != 2 || s.InFlight() || s.TxnEvents != nil || s.Failures != 0 ||
			s.DownSinceTS != 0 || s.LastError != "" || s.LastSuccessTS != 5000 || s.LeaseOwner != "b" {
			t.Fatalf("after ack = %+v", s)
		}
		ok, err = db.AckAppserviceTxn(ctx, "irc", "b", 1, 6000, nil)
		refused("ack twice", ok, err)

		if err := db.ReleaseAppserviceStream(ctx, "irc", "b"); err != nil {
			t.Fatal(err)
		}
		ok, err = db.ClaimAppserviceStream(ctx, "irc", "a", 3500, 4500)
		mustOK("claim after release", ok, err)
		if err := db.ClearAppserviceLeases(ctx); err != nil {
			t.Fatal(err)
		}
		ok, err = db.ClaimAppserviceStream(ctx, "irc", "c", 3600, 4600)
		mustOK("claim after clearing the leases", ok, err)

		if _, err := db.EnsureAppserviceStream(ctx, "bot", 0); err != nil {
			t.Fatal(err)
		}
		all, err := db.AppserviceStreams(ctx)
		if err != nil || len(all) != 2 || all[0].ASID != "bot" || all[1].ASID != "irc" {
			t.Fatalf("AppserviceStreams = %+v, %v", all, err)
		}
	})
}

// The pusher's reads: the stream across rooms, events by position, and a
// room's canonical aliases.
func TestAppserviceStreamReads(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		f := &roomFixture{t: t, db: db}
		f.room("!a:x", false)
		f.room("!b:x", false)
		start, err := db.CurrentStreamPos(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f.state("!a:x", "m.room.create", "", map[string]any{"room_version": "12"})
		f.state("!b:x", "m.room.create", "", map[string]any{"room_version": "12"})
		if _, err := db.AllocStreamPos(ctx, 3); err != nil { // positions without events (receipts, …)
			t.Fatal(err)
		}
		f.state("!a:x", "m.room.canonical_alias", "", map[string]any{"alias": "#a:x", "alt_aliases": []string{"#a2:x", "#a3:x"}})
		f.state("!a:x", "m.room.canonical_alias", "", map[string]any{"alias": "#new:x", "alt_aliases": []any{"#alt:x", 7}})
		cur, err := db.CurrentStreamPos(ctx)
		if err != nil {
			t.Fatal(err)
		}

		evts, err := db.StreamEvents(ctx, start, cur, 100)
		if err != nil {
			t.Fatal(err)
		}
		var rooms []id.RoomID
		var positions []int64
		for _, e := range evts {
			rooms = append(rooms, e.RoomID)
			positions = append(positions, e.StreamPos)
		}
		if !slices.Equal(rooms, []id.RoomID{"!a:x", "!b:x", "!a:x", "!a:x"}) || !slices.IsSorted(positions) {
			t.Fatalf("StreamEvents = %v at %v", rooms, positions)
		}
		page, err := db.StreamEvents(ctx, positions[0], cur, 2)
		if err != nil || len(page) != 2 || page[0].StreamPos != positions[1] || page[1].StreamPos != positions[2] {
			t.Fatalf("second page = %v, %v", page, err)
		}
		byPos, err := db.EventsAtStreamPositions(ctx, []int64{positions[3], positions[0], positions[1] + 1})
		if err != nil || len(byPos) != 2 || byPos[0].StreamPos != positions[0] || byPos[1].StreamPos != positions[3] {
			t.Fatalf("EventsAtStreamPositions = %v, %v", byPos, err)
		}

		aliases, err := db.CanonicalAliases(ctx, "!a:x")
		if err != nil || !slices.Equal(aliases, []id.RoomAlias{"#new:x", "#alt:x"}) {
			t.Fatalf("CanonicalAliases(!a:x) = %v, %v", aliases, err)
		}
		if aliases, err := db.CanonicalAliases(ctx, "!b:x"); err != nil || len(aliases) != 0 {
			t.Fatalf("CanonicalAliases(!b:x) = %v, %v", aliases, err)
		}
	})
}
