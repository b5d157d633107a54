package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/internal/testdb"
)

// backfillSQL is upgrade v14's INSERT INTO event_search for db's dialect.
func backfillSQL(t *testing.T, db *DB) string {
	t.Helper()
	data, err := upgrades.ReadFile("upgrades/14-search.sql")
	if err != nil {
		t.Fatal(err)
	}
	filtered, err := db.Internals().FilterSQLUpgrade(bytes.Split(data, []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)INSERT INTO event_search .*?;`).FindString(filtered)
	if m == "" {
		t.Fatal("no backfill statement in upgrade v14")
	}
	return m
}

// The upgrade fills event_search for the events stored before it with
// exactly what SearchText gives new events, on both databases.
func TestSearchBackfillMatchesSearchText(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		ctx := context.Background()
		db, err := Open(ctx, uri, t.TempDir(), 0, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		roomID := id.RoomID("!room:x")
		if err := db.InsertRoom(ctx, &Room{RoomID: roomID, Version: "12", Creator: "@a:x", CreatedTS: 1}); err != nil {
			t.Fatal(err)
		}
		empty := ""
		other := "x"
		cases := []struct {
			typ      string
			stateKey *string
			content  string
		}{
			{"m.room.message", nil, `{"msgtype":"m.text","body":"hello wörld"}`},
			{"m.room.message", nil, `{"msgtype":"m.text","body":""}`},
			{"m.room.message", nil, `{"msgtype":"m.text","body":42}`},
			{"m.room.message", nil, `{"msgtype":"m.text"}`},
			{"m.room.message", nil, `{"body":"nul \u0000 inside"}`},
			{"m.room.message", &empty, `{"body":"a state message is no message"}`},
			{"m.room.name", &empty, `{"name":"Lobby"}`},
			{"m.room.name", &other, `{"name":"not the room name"}`},
			{"m.room.name", &empty, `{"name":null}`},
			{"m.room.topic", &empty, `{"topic":"plain"}`},
			{"m.room.topic", &empty, `{"topic":"same","m.topic":{"m.text":[{"body":"same"},{"mimetype":"text/html","body":"<b>html</b>"},{"mimetype":"text/plain","body":"other"},{"mimetype":null,"body":"null mime"},{"mimetype":5,"body":"odd mime"},{"body":""},"string",{"body":7}]}}`},
			{"m.room.topic", &empty, `{"m.topic":{"m.text":[{"body":"only the block"}]}}`},
			{"m.room.topic", &empty, `{"topic":"","m.topic":{"m.text":{"body":"not an array"}}}`},
			{"m.room.topic", &empty, `{"topic":["no"]}`},
			{"m.room.encrypted", nil, `{"ciphertext":"abc","body":"not searched"}`},
		}
		for i, c := range cases {
			pdu := fmt.Sprintf(`{"content":%s,"room_id":"%s","sender":"@a:x","type":"%s"}`, c.content, roomID, c.typ)
			if !json.Valid([]byte(pdu)) {
				t.Fatalf("case %d: invalid JSON %s", i, pdu)
			}
			e := &Event{StreamPos: int64(i + 1), EventID: id.EventID(fmt.Sprintf("$e%d", i)), RoomID: roomID, Type: c.typ,
				StateKey: c.stateKey, Sender: "@a:x", Depth: int64(i + 1), OriginServerTS: 1, PDU: []byte(pdu)}
			if err := db.InsertEvent(ctx, e); err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
		}
		read := func() map[int64]string {
			rows, err := db.Query(ctx, `SELECT stream_pos, text, sender, type FROM event_search`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			out := map[int64]string{}
			for rows.Next() {
				var pos int64
				var text, sender, typ string
				if err := rows.Scan(&pos, &text, &sender, &typ); err != nil {
					t.Fatal(err)
				}
				out[pos] = text + "|" + sender + "|" + typ
			}
			return out
		}
		live := read()
		want := map[int64]string{
			1:  "hello wörld|@a:x|m.room.message",
			7:  "Lobby|@a:x|m.room.name",
			10: "plain|@a:x|m.room.topic",
			11: "same\nother\nnull mime|@a:x|m.room.topic",
			12: "only the block|@a:x|m.room.topic",
		}
		if !maps.Equal(live, want) {
			t.Fatalf("indexed on insert:\n got %v\nwant %v", live, want)
		}
		if _, err := db.Exec(ctx, `DELETE FROM event_search`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(ctx, backfillSQL(t, db)); err != nil {
			t.Fatalf("backfill: %v", err)
		}
		if got := read(); !maps.Equal(got, want) {
			keys := slices.Sorted(maps.Keys(got))
			t.Fatalf("backfilled (positions %v):\n got %v\nwant %v", keys, got, want)
		}
	})
}

func TestParseSearchTerms(t *testing.T) {
	for _, c := range []struct{ in, fts5, tsquery string }{
		{"Martians", `("martians"*)`, `('martians':*)`},
		{"martians and men", `("martians"* AND "men"*)`, `('martians':* & 'men':*)`},
		{`"martians have" -landed`, `(("martians have") NOT "landed"*)`, `('martians have' & !'landed':*)`},
		{`cafe OR "bar"`, `("cafe"*) OR ("bar")`, `('cafe':*) | ('bar')`},
		{"example.com", `("example com")`, `('example.com')`},
		{`it's O'Brien\x`, `("it s" AND "o brien x")`, `('it''s' & 'O''Brien\\x')`},
		{"-alone", ``, ``},
		{"!!! -- or and", ``, ``},
		{`"unterminated phrase`, `("unterminated phrase")`, `('unterminated phrase')`},
	} {
		terms := ParseSearchTerms(c.in)
		if got := terms.fts5(); got != c.fts5 {
			t.Errorf("%q: fts5 %s, want %s", c.in, got, c.fts5)
		}
		if got := terms.tsquery(); got != c.tsquery {
			t.Errorf("%q: tsquery %s, want %s", c.in, got, c.tsquery)
		}
		if terms.Empty() != (c.fts5 == "") {
			t.Errorf("%q: Empty() = %v", c.in, terms.Empty())
		}
	}
	terms := ParseSearchTerms(`mart "rocket launch" -boom`)
	if got := terms.Highlights("Martians! The rocket launch went boom; MARTIAN rockets"); !slices.Equal(got, []string{"Martians", "rocket", "launch", "MARTIAN"}) {
		t.Errorf("highlights = %q", got)
	}
}
