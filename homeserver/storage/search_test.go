package storage_test

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
	"github.com/switchboard-im/switchboard/internal/testpeer"
)

// requireSearch skips (fails under CI) on a SQLite built without FTS5.
func requireSearch(t *testing.T, db *storage.DB) {
	t.Helper()
	if !db.SearchAvailable(ctx) {
		testpeer.Missing(t, "SQLite lacks FTS5: build with -tags sqlite_fts5 (make test does)")
	}
}

type searchFixture struct {
	t   *testing.T
	db  *storage.DB
	n   int
	ids map[int64]string
}

func (f *searchFixture) event(roomID id.RoomID, sender id.UserID, typ string, stateKey *string, content map[string]any) int64 {
	f.t.Helper()
	pos, err := f.db.AllocStreamPos(ctx, 1)
	if err != nil {
		f.t.Fatal(err)
	}
	f.n++
	pdu, _ := json.Marshal(map[string]any{"type": typ, "room_id": roomID, "sender": sender, "content": content})
	e := &storage.Event{StreamPos: pos, EventID: id.EventID(fmt.Sprintf("$s%d", f.n)), RoomID: roomID, Type: typ, StateKey: stateKey,
		Sender: sender, Depth: int64(f.n), OriginServerTS: int64(f.n), PDU: pdu}
	if err := f.db.InsertEvent(ctx, e); err != nil {
		f.t.Fatal(err)
	}
	return pos
}

func (f *searchFixture) msg(roomID id.RoomID, sender id.UserID, body string) int64 {
	return f.event(roomID, sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body})
}

func TestSearchEvents(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		requireSearch(t, db)
		f := &searchFixture{t: t, db: db}
		roomA, roomB := id.RoomID("!a:x"), id.RoomID("!b:x")
		for _, r := range []id.RoomID{roomA, roomB} {
			if err := db.InsertRoom(ctx, &storage.Room{RoomID: r, Version: "12", Creator: "@alice:x", CreatedTS: 1}); err != nil {
				t.Fatal(err)
			}
		}
		empty := ""
		mars1 := f.msg(roomA, "@alice:x", "The martians have landed")
		mars2 := f.msg(roomA, "@bob:x", "martians martians martians everywhere, martians!")
		mars3 := f.msg(roomB, "@alice:x", "A martian walked into a bar")
		cafe := f.msg(roomA, "@bob:x", "Meet at the Café de Flore")
		name := f.event(roomB, "@alice:x", "m.room.name", &empty, map[string]any{"name": "Martian embassy"})
		f.msg(roomB, "@bob:x", "nothing to see here")
		punct := f.msg(roomB, "@bob:x", "mail bob@example.com about example.com, e-mail me, don't wait, v1.5 it's O'Brien\\'s")

		whole := map[id.RoomID][]storage.PosRange{roomA: nil, roomB: nil}
		all := &storage.SearchFilter{Rooms: whole, Types: []string{"m.room.message", "m.room.name", "m.room.topic"}}
		search := func(q string, filter *storage.SearchFilter) []int64 {
			t.Helper()
			hits, _, _, err := db.SearchEvents(ctx, storage.ParseSearchTerms(q), filter, nil, 100)
			if err != nil {
				t.Fatalf("search %q: %v", q, err)
			}
			var out []int64
			for _, h := range hits {
				out = append(out, h.StreamPos)
			}
			return out
		}
		expect := func(q string, filter *storage.SearchFilter, want ...int64) {
			t.Helper()
			if got := search(q, filter); !slices.Equal(got, want) {
				t.Errorf("search %q = %v, want %v", q, got, want)
			}
		}
		// Newest first; a bare word also finds the words it begins.
		expect("martian", all, name, mars3, mars2, mars1)
		expect("MARTIANS", all, mars2, mars1)
		expect(`"martians have"`, all, mars1)
		expect(`"martian"`, all, name, mars3)
		expect("martian -bar", all, name, mars2, mars1)
		expect("café or bar", all, cafe, mars3)
		if strings.HasPrefix(uri, "sqlite:") {
			// FTS5's unicode61 folds diacritics; PostgreSQL's 'simple'
			// configuration does not (unaccent is an extension).
			expect("cafe", all, cafe)
		}
		expect("-martians", all)
		// Punctuated words, however each database tokenizes them.
		for _, q := range []string{"example.com", "bob@example.com", "e-mail", "don't", `"wait, v1.5"`, "exam", "O'Brien\\'s", `"o'brien\\'s"`} {
			expect(q, all, punct)
		}
		expect("!!!", all)

		// Filters: rooms, types (keys), senders.
		expect("martian", &storage.SearchFilter{Rooms: map[id.RoomID][]storage.PosRange{roomB: nil}, Types: all.Types}, name, mars3)
		expect("martian", &storage.SearchFilter{Rooms: all.Rooms, Types: []string{"m.room.name"}}, name)
		// Only the positions the user may see, room by room.
		expect("martian", &storage.SearchFilter{Types: all.Types, Rooms: map[id.RoomID][]storage.PosRange{
			roomA: {{From: mars2, To: mars2}}, roomB: {{From: 0, To: mars3}}}}, mars3, mars2)
		expect("martian", &storage.SearchFilter{Types: all.Types, Rooms: map[id.RoomID][]storage.PosRange{
			roomA: {{From: 0, To: mars1}, {From: mars2 + 1, To: math.MaxInt64}}, roomB: {}}}, mars1)
		expect("martian", &storage.SearchFilter{Rooms: all.Rooms, Types: all.Types, Senders: []id.UserID{"@bob:x"}}, mars2)
		expect("martian", &storage.SearchFilter{Rooms: all.Rooms, Types: all.Types, NotSenders: []id.UserID{"@alice:x"}}, mars2)
		expect("martian", &storage.SearchFilter{Types: all.Types})

		// By rank, the message saying it most comes first.
		ranked := *all
		ranked.ByRank = true
		hits, more, total, err := db.SearchEvents(ctx, storage.ParseSearchTerms("martians"), &ranked, nil, 1)
		if err != nil || len(hits) != 1 || hits[0].StreamPos != mars2 || !more || total != 2 {
			t.Fatalf("best match = %+v (more %v, total %d), %v; want %d of 2", hits, more, total, err, mars2)
		}
		// Paging on from a hit, by rank and by recency.
		next, more, _, err := db.SearchEvents(ctx, storage.ParseSearchTerms("martians"), &ranked, &hits[0], 5)
		if err != nil || len(next) != 1 || next[0].StreamPos != mars1 || more || next[0].Rank > hits[0].Rank {
			t.Fatalf("after the best: %+v (more %v), %v", next, more, err)
		}
		next, more, _, err = db.SearchEvents(ctx, storage.ParseSearchTerms("martian"), all, &storage.SearchHit{StreamPos: mars3}, 1)
		if err != nil || len(next) != 1 || next[0].StreamPos != mars2 || !more {
			t.Fatalf("recent after %d: %+v (more %v), %v", mars3, next, more, err)
		}
		if n, err := db.SearchCount(ctx, storage.ParseSearchTerms("martian"), all); err != nil || n != 4 {
			t.Errorf("count = %d, %v; want 4", n, err)
		}

		// A redacted event leaves the index.
		if err := db.SetRedactedBy(ctx, "$s2", "$redaction", []byte(`{"content":{}}`)); err != nil {
			t.Fatal(err)
		}
		expect("martians", all, mars1)
	})
}

// A database written by a binary without FTS5 (which drops the triggers)
// gets its index rebuilt by the next binary with it.
func TestSearchIndexRebuiltAfterOpenWithoutFTS5(t *testing.T) {
	uri := testdb.SQLiteURI(t)
	dir := t.TempDir()
	db, err := storage.Open(ctx, uri, dir, 0, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	requireSearch(t, db)
	if err := db.InsertRoom(ctx, &storage.Room{RoomID: "!a:x", Version: "12", Creator: "@a:x", CreatedTS: 1}); err != nil {
		t.Fatal(err)
	}
	f := &searchFixture{t: t, db: db}
	before := f.msg("!a:x", "@a:x", "written with the index")
	for _, trigger := range []string{"event_search_fts_insert", "event_search_fts_delete"} {
		if _, err := db.Exec(ctx, "DROP TRIGGER "+trigger); err != nil {
			t.Fatal(err)
		}
	}
	during := f.msg("!a:x", "@a:x", "written without the index")
	if err := db.SetRedactedBy(ctx, "$s1", "$r", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = storage.Open(ctx, uri, dir, 0, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	filter := &storage.SearchFilter{Rooms: map[id.RoomID][]storage.PosRange{"!a:x": nil}, Types: []string{"m.room.message"}}
	hits, _, _, err := db.SearchEvents(ctx, storage.ParseSearchTerms("written"), filter, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 1 || hits[0].StreamPos != during {
		t.Fatalf("after rebuild: %+v, want only %d (not the redacted %d)", hits, during, before)
	}
	// And the triggers are back: new events are found at once.
	f.db = db
	after := f.msg("!a:x", "@a:x", "written after the rebuild")
	if hits, _, _, _ := db.SearchEvents(ctx, storage.ParseSearchTerms("rebuild"), filter, nil, 10); len(hits) != 1 || hits[0].StreamPos != after {
		t.Fatalf("new event after rebuild: %+v", hits)
	}
}
