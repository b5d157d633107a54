package clientapi_test

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
	"github.com/switchboard-im/switchboard/internal/testpeer"
)

// searchAvailable reports whether /search works on the database at uri:
// on SQLite it needs FTS5, which the sqlite_fts5 build tag compiles in.
func searchAvailable(t testing.TB, uri string) bool {
	t.Helper()
	if !strings.HasPrefix(uri, "sqlite:") {
		return true
	}
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var has bool
	if err := db.QueryRow(`SELECT sqlite_compileoption_used('ENABLE_FTS5')`).Scan(&has); err != nil {
		t.Fatal(err)
	}
	return has
}

// requireFTS5 skips SQLite subtests (fails them under CI) when the test
// binary was built without FTS5.
func requireFTS5(t testing.TB, uri string) {
	t.Helper()
	if !searchAvailable(t, uri) {
		testpeer.Missing(t, "SQLite lacks FTS5, which /search needs: build with -tags sqlite_fts5 (make test does)")
	}
}

func search(t *testing.T, cli *mautrix.Client, req *mautrix.ReqSearch) *mautrix.RespSearch {
	t.Helper()
	resp, err := cli.Search(ctx, req)
	if err != nil {
		t.Fatalf("search %q: %v", req.SearchTerm, err)
	}
	if resp == nil {
		t.Fatalf("search %q: no room_events in the answer", req.SearchTerm)
	}
	return resp
}

// resultIDs returns the event IDs of the results, in order.
func resultIDs(resp *mautrix.RespSearch) []id.EventID {
	var out []id.EventID
	for _, r := range resp.Results {
		out = append(out, r.Event.ID)
	}
	return out
}

func resultBodies(resp *mautrix.RespSearch) []string {
	var events []*event.Event
	for _, r := range resp.Results {
		events = append(events, r.Event)
	}
	return bodies(events)
}

func TestSearchRoomEvents(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		requireFTS5(t, uri)
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		if err := bob.SetDisplayName(ctx, "Bob the Builder"); err != nil {
			t.Fatal(err)
		}

		// Lobby: alice and bob, history shared.
		lobby, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Rocket club"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, lobby.RoomID); err != nil {
			t.Fatal(err)
		}
		once := sendText(t, alice, lobby.RoomID, "The rocket is ready")
		often := sendText(t, bob, lobby.RoomID, "rocket rocket rocket rocket, what a rocket")
		latest := sendText(t, alice, lobby.RoomID, "Rocket launch at noon")

		// Alice's private room: bob never joined.
		private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, private.RoomID, "my private rocket diary")

		// Joined-only history: bob may see only what came after he joined.
		club, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, club.RoomID, "secret rocket plans before bob")
		if _, err := bob.JoinRoomByID(ctx, club.RoomID); err != nil {
			t.Fatal(err)
		}
		inClub := sendText(t, alice, club.RoomID, "rocket news for members")

		// An encrypted room is left out of search altogether (spec), even
		// for a message sent in the clear.
		crypt, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, crypt.RoomID); err != nil {
			t.Fatal(err)
		}
		sendText(t, bob, crypt.RoomID, "rocket in the clear")

		t.Run("only rooms and events the user may see", func(t *testing.T) {
			resp := search(t, bob, &mautrix.ReqSearch{SearchTerm: "rocket", OrderBy: "recent", Keys: []string{"content.body"}})
			want := []id.EventID{inClub, latest, often, once}
			if got := resultIDs(resp); !slices.Equal(got, want) {
				t.Fatalf("bob finds %v %q, want %v", got, resultBodies(resp), want)
			}
			if resp.Count != 4 {
				t.Errorf("count = %d, want 4", resp.Count)
			}
			// Alice, who was everywhere, finds her private diary and the
			// club's early history; carol finds nothing.
			got := resultBodies(search(t, alice, &mautrix.ReqSearch{SearchTerm: "rocket", Keys: []string{"content.body"}}))
			for _, b := range []string{"my private rocket diary", "secret rocket plans before bob"} {
				if !slices.Contains(got, b) {
					t.Errorf("alice does not find %q in %q", b, got)
				}
			}
			if slices.Contains(got, "rocket in the clear") {
				t.Errorf("a message of an encrypted room was found: %q", got)
			}
			if resp := search(t, carol, &mautrix.ReqSearch{SearchTerm: "rocket"}); len(resp.Results) != 0 || resp.Count != 0 {
				t.Errorf("carol finds %q (count %d)", resultBodies(resp), resp.Count)
			}
		})

		t.Run("rank and recent", func(t *testing.T) {
			f := &mautrix.FilterPart{Rooms: []id.RoomID{lobby.RoomID}, Types: []event.Type{event.EventMessage}}
			ranked := search(t, bob, &mautrix.ReqSearch{SearchTerm: "rocket", Filter: f})
			if ids := resultIDs(ranked); len(ids) != 3 || ids[0] != often {
				t.Fatalf("by rank: %q, want %q first", resultBodies(ranked), "rocket rocket…")
			}
			for i := 1; i < len(ranked.Results); i++ {
				if ranked.Results[i].Rank > ranked.Results[i-1].Rank {
					t.Errorf("ranks not descending: %v then %v", ranked.Results[i-1].Rank, ranked.Results[i].Rank)
				}
			}
			recent := search(t, bob, &mautrix.ReqSearch{SearchTerm: "rocket", Filter: f, OrderBy: "recent"})
			if got, want := resultIDs(recent), []id.EventID{latest, often, once}; !slices.Equal(got, want) {
				t.Fatalf("by recency: %v, want %v", got, want)
			}
		})

		t.Run("keys and filters", func(t *testing.T) {
			// content.name finds the room's name event.
			names := search(t, bob, &mautrix.ReqSearch{SearchTerm: "club", Keys: []string{"content.name"}})
			if len(names.Results) != 1 || names.Results[0].Event.Type != event.StateRoomName {
				t.Fatalf("name search: %+v", names.Results)
			}
			if r := search(t, bob, &mautrix.ReqSearch{SearchTerm: "club", Keys: []string{"content.body"}}); len(r.Results) != 0 {
				t.Errorf("body search for a name word: %q", resultBodies(r))
			}
			nameEvent := names.Results[0].Event.ID
			cases := []struct {
				name   string
				filter *mautrix.FilterPart
				want   []id.EventID
			}{
				{"senders", &mautrix.FilterPart{Senders: []id.UserID{bob.UserID}}, []id.EventID{often}},
				{"not_senders", &mautrix.FilterPart{NotSenders: []id.UserID{alice.UserID}}, []id.EventID{often}},
				{"rooms", &mautrix.FilterPart{Rooms: []id.RoomID{club.RoomID}}, []id.EventID{inClub}},
				{"not_rooms", &mautrix.FilterPart{NotRooms: []id.RoomID{club.RoomID}}, []id.EventID{latest, often, once, nameEvent}},
				{"limit", &mautrix.FilterPart{Limit: 2}, []id.EventID{inClub, latest}},
				{"types", &mautrix.FilterPart{Types: []event.Type{event.StateRoomName}}, []id.EventID{nameEvent}},
				{"not_types wildcard", &mautrix.FilterPart{NotTypes: []event.Type{{Type: "m.room.*"}}}, nil},
			}
			for _, c := range cases {
				resp := search(t, bob, &mautrix.ReqSearch{SearchTerm: "rocket", OrderBy: "recent", Filter: c.filter})
				if got := resultIDs(resp); !slices.Equal(got, c.want) {
					t.Errorf("%s: %v %q, want %v", c.name, got, resultBodies(resp), c.want)
				}
			}
		})

		t.Run("highlights", func(t *testing.T) {
			resp := search(t, bob, &mautrix.ReqSearch{SearchTerm: "rock"})
			for _, w := range []string{"rocket", "Rocket"} {
				if !slices.Contains(resp.Highlights, w) {
					t.Errorf("highlights %q lack %q", resp.Highlights, w)
				}
			}
			resp = search(t, bob, &mautrix.ReqSearch{SearchTerm: `"rocket launch" -diary`})
			if got := resultIDs(resp); !slices.Equal(got, []id.EventID{latest}) {
				t.Fatalf("phrase search: %q", resultBodies(resp))
			}
			if !slices.Equal(resp.Highlights, []string{"Rocket", "launch"}) {
				t.Errorf("phrase highlights = %q", resp.Highlights)
			}
		})

		t.Run("context, profiles, state, groups", func(t *testing.T) {
			var resp struct {
				SearchCategories struct {
					RoomEvents struct {
						Results []struct {
							Result  *event.Event `json:"result"`
							Context struct {
								Start        string                       `json:"start"`
								End          string                       `json:"end"`
								EventsBefore []*event.Event               `json:"events_before"`
								EventsAfter  []*event.Event               `json:"events_after"`
								ProfileInfo  map[id.UserID]map[string]any `json:"profile_info"`
							} `json:"context"`
						} `json:"results"`
						State  map[id.RoomID][]*event.Event                    `json:"state"`
						Groups map[string]map[string]mautrix.SearchResultGroup `json:"groups"`
					} `json:"room_events"`
				} `json:"search_categories"`
			}
			body := map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
				"search_term":   "what",
				"event_context": map[string]any{"before_limit": 1, "after_limit": 5, "include_profile": true},
				"include_state": true,
				"groupings":     map[string]any{"group_by": []map[string]any{{"key": "room_id"}, {"key": "sender"}}},
			}}}
			if _, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "search"), body, &resp); err != nil {
				t.Fatal(err)
			}
			re := resp.SearchCategories.RoomEvents
			if len(re.Results) != 1 || re.Results[0].Result.ID != often {
				t.Fatalf("results: %+v", re.Results)
			}
			c := re.Results[0].Context
			if len(c.EventsBefore) != 1 || c.EventsBefore[0].ID != once {
				t.Errorf("events_before = %v, want [%s]", c.EventsBefore, once)
			}
			if len(c.EventsAfter) != 1 || c.EventsAfter[0].ID != latest {
				t.Errorf("events_after = %v, want [%s]", c.EventsAfter, latest)
			}
			if c.Start == "" || c.End == "" {
				t.Errorf("context tokens missing: %q %q", c.Start, c.End)
			}
			// The tokens page /messages from the context's edges.
			more, err := bob.Messages(ctx, lobby.RoomID, c.Start, "", mautrix.DirectionBackward, nil, 1)
			if err != nil || len(more.Chunk) != 1 || more.Chunk[0].ID == once {
				t.Errorf("paging back from start: %+v, %v", more, err)
			}
			if p := c.ProfileInfo[bob.UserID]; p["displayname"] != "Bob the Builder" {
				t.Errorf("profile_info = %v", c.ProfileInfo)
			}
			if _, ok := c.ProfileInfo[alice.UserID]; !ok {
				t.Errorf("profile_info lacks the context's other sender: %v", c.ProfileInfo)
			}
			var sawName bool
			for _, e := range re.State[lobby.RoomID] {
				sawName = sawName || e.Type == event.StateRoomName
			}
			if !sawName || len(re.State) != 1 {
				t.Errorf("state = %v", re.State)
			}
			if g := re.Groups["room_id"][string(lobby.RoomID)]; !slices.Equal(g.Results, []string{string(often)}) || g.Order != 1 {
				t.Errorf("room_id group = %+v", re.Groups["room_id"])
			}
			if g := re.Groups["sender"][string(bob.UserID)]; !slices.Equal(g.Results, []string{string(often)}) {
				t.Errorf("sender group = %+v", re.Groups["sender"])
			}
		})

		t.Run("redacted messages leave the index", func(t *testing.T) {
			zebra := sendText(t, alice, lobby.RoomID, "a zebra crossed")
			if got := resultIDs(search(t, bob, &mautrix.ReqSearch{SearchTerm: "zebra"})); !slices.Equal(got, []id.EventID{zebra}) {
				t.Fatalf("before redaction: %v", got)
			}
			if _, err := alice.RedactEvent(ctx, lobby.RoomID, zebra); err != nil {
				t.Fatal(err)
			}
			if resp := search(t, bob, &mautrix.ReqSearch{SearchTerm: "zebra"}); len(resp.Results) != 0 || resp.Count != 0 {
				t.Fatalf("redacted message still found: %+v", resp.Results)
			}
		})

		t.Run("left rooms: what came before leaving", func(t *testing.T) {
			if _, err := bob.LeaveRoom(ctx, club.RoomID); err != nil {
				t.Fatal(err)
			}
			sendText(t, alice, club.RoomID, "rocket news after bob left")
			resp := search(t, bob, &mautrix.ReqSearch{SearchTerm: "rocket", Filter: &mautrix.FilterPart{Rooms: []id.RoomID{club.RoomID}}})
			if got := resultIDs(resp); !slices.Equal(got, []id.EventID{inClub}) {
				t.Fatalf("after leaving bob finds %q", resultBodies(resp))
			}
		})
		t.Run("ignored users", func(t *testing.T) {
			if err := bob.SetAccountData(ctx, event.AccountDataIgnoredUserList.Type,
				map[string]any{"ignored_users": map[id.UserID]any{alice.UserID: map[string]any{}}}); err != nil {
				t.Fatal(err)
			}
			resp := search(t, bob, &mautrix.ReqSearch{SearchTerm: "rocket"})
			if got := resultIDs(resp); !slices.Equal(got, []id.EventID{often}) {
				t.Fatalf("bob ignoring alice finds %q", resultBodies(resp))
			}
		})
	})
}

// Every match comes exactly once over the pages, in order, until
// next_batch runs out; group tokens page inside their group.
func TestSearchPagination(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		requireFTS5(t, uri)
		srv := hstest.Start(t, uri, nil)
		alice := srv.NewUser("alice")
		var rooms []id.RoomID
		for range 2 {
			r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
			if err != nil {
				t.Fatal(err)
			}
			rooms = append(rooms, r.RoomID)
		}
		var sent []id.EventID
		for i := range 25 {
			// Ranks differ (more repeats, higher rank) and some tie.
			sent = append(sent, sendText(t, alice, rooms[i%2], strings.Repeat("pageword ", 1+i%4)+fmt.Sprint(i)))
		}
		for _, order := range []string{"recent", "rank"} {
			seen := map[id.EventID]bool{}
			var got []id.EventID
			var ranks []float64
			req := &mautrix.ReqSearch{SearchTerm: "pageword", OrderBy: order, Filter: &mautrix.FilterPart{Limit: 7}}
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatalf("%s: next_batch never ran out", order)
				}
				resp := search(t, alice, req)
				if resp.Count != 25 {
					t.Errorf("%s: count = %d, want 25", order, resp.Count)
				}
				if len(resp.Results) > 7 {
					t.Fatalf("%s: %d results over the limit", order, len(resp.Results))
				}
				for _, r := range resp.Results {
					if seen[r.Event.ID] {
						t.Fatalf("%s: %s came twice", order, r.Event.ID)
					}
					seen[r.Event.ID] = true
					got = append(got, r.Event.ID)
					ranks = append(ranks, r.Rank)
				}
				if resp.NextBatch == "" {
					break
				}
				req.NextBatch = resp.NextBatch
			}
			if len(got) != 25 {
				t.Fatalf("%s: %d results over all pages, want 25", order, len(got))
			}
			if order == "recent" {
				want := slices.Clone(sent)
				slices.Reverse(want)
				if !slices.Equal(got, want) {
					t.Errorf("recent order over pages: %v, want %v", got, want)
				}
			} else if !sort.SliceIsSorted(ranks, func(i, j int) bool { return ranks[i] > ranks[j] }) {
				t.Errorf("ranks over pages not descending: %v", ranks)
			}
		}

		// A group's next_batch stays in the group.
		req := &mautrix.ReqSearch{SearchTerm: "pageword", OrderBy: "recent", Filter: &mautrix.FilterPart{Limit: 3},
			Groupings: mautrix.SearchGroupings{GroupBy: []mautrix.SearchGroup{{Key: "room_id"}}}}
		first := search(t, alice, req)
		g := first.Groups["room_id"][string(rooms[0])]
		if g.NextBatch == "" {
			t.Fatalf("group without next_batch: %+v", first.Groups)
		}
		inGroup := 0
		req.NextBatch = g.NextBatch
		for pages := 0; req.NextBatch != "" && pages < 10; pages++ {
			resp := search(t, alice, req)
			for _, r := range resp.Results {
				if r.Event.RoomID != rooms[0] {
					t.Fatalf("group page has an event of %s", r.Event.RoomID)
				}
				inGroup++
			}
			req.NextBatch = resp.NextBatch
		}
		if inGroup+len(g.Results) != 13 {
			t.Errorf("room group paged to %d events, want 13", inGroup+len(g.Results))
		}
	})
}

func TestSearchBadInput(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	alice := srv.NewUser("alice")
	post := func(body any, query map[string]string) error {
		_, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "search"}, query), body, nil)
		return err
	}
	roomEvents := func(criteria map[string]any) map[string]any {
		return map[string]any{"search_categories": map[string]any{"room_events": criteria}}
	}
	cases := []struct {
		name   string
		body   any
		query  map[string]string
		code   string
		status int
	}{
		{"no categories", map[string]any{}, nil, "M_MISSING_PARAM", 400},
		{"categories not an object", map[string]any{"search_categories": []int{1}}, nil, "M_BAD_JSON", 400},
		{"unknown category", map[string]any{"search_categories": map[string]any{"users": map[string]any{}}}, nil, "M_UNKNOWN", 400},
		{"no search_term", roomEvents(map[string]any{}), nil, "M_MISSING_PARAM", 400},
		{"search_term a number", roomEvents(map[string]any{"search_term": 5}), nil, "M_BAD_JSON", 400},
		{"unknown key", roomEvents(map[string]any{"search_term": "x", "keys": []string{"content.url"}}), nil, "M_INVALID_PARAM", 400},
		{"unknown order", roomEvents(map[string]any{"search_term": "x", "order_by": "oldest"}), nil, "M_INVALID_PARAM", 400},
		{"unknown group", roomEvents(map[string]any{"search_term": "x", "groupings": map[string]any{"group_by": []map[string]any{{"key": "type"}}}}), nil, "M_INVALID_PARAM", 400},
		{"zero limit", roomEvents(map[string]any{"search_term": "x", "filter": map[string]any{"limit": 0}}), nil, "M_BAD_JSON", 400},
		{"filter not an object", roomEvents(map[string]any{"search_term": "x", "filter": "all"}), nil, "M_BAD_JSON", 400},
		{"negative context", roomEvents(map[string]any{"search_term": "x", "event_context": map[string]any{"before_limit": -1}}), nil, "M_INVALID_PARAM", 400},
		{"bad next_batch", roomEvents(map[string]any{"search_term": "x"}), map[string]string{"next_batch": "!!"}, "M_INVALID_PARAM", 400},
		{"next_batch of another order", roomEvents(map[string]any{"search_term": "x"}), map[string]string{"next_batch": "eyJvIjoicmVjZW50IiwicCI6NX0"}, "M_INVALID_PARAM", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mustErrCode(t, post(c.body, c.query), c.code, c.status)
		})
	}
	// Not JSON at all.
	_, err := alice.MakeFullRequest(ctx, mautrix.FullRequest{Method: http.MethodPost, URL: alice.BuildClientURL("v3", "search"),
		RequestBytes: []byte("search for rockets")})
	mustErrCode(t, err, "M_NOT_JSON", 400)
	// Without room_events there is nothing to search, and nothing found.
	var resp map[string]any
	if _, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "search"), map[string]any{"search_categories": map[string]any{}}, &resp); err != nil {
		t.Fatal(err)
	}
	if cats, _ := resp["search_categories"].(map[string]any); cats == nil || len(cats) != 0 {
		t.Errorf("empty search = %v", resp)
	}
}

// BenchmarkSearch100k measures /search over HTTP on SQLite (PostgreSQL with
// SWITCHBOARD_BENCH_DB=postgres) with 100,000 messages in 20 rooms the user
// is in. Run it alone:
//
//	go test -tags sqlite_fts5 -run '^$' -bench Search100k -benchtime 1x ./homeserver/clientapi/
//
// It prints "bench search …" lines: latency percentiles by query kind.
func BenchmarkSearch100k(b *testing.B) {
	dialect := cmp.Or(os.Getenv("SWITCHBOARD_BENCH_DB"), testdb.SQLite)
	uri := testdb.URI(b, dialect)
	requireFTS5(b, uri)
	srv := hstest.Start(b, uri, nil)
	alice := srv.NewUser("alice")
	bg := context.Background()

	// A Zipf-distributed vocabulary, as in chat: a few words everywhere,
	// most words rare.
	rng := rand.New(rand.NewPCG(1, 2))
	const vocabSize = 20000
	vocab := make([]string, vocabSize)
	for i := range vocab {
		vocab[i] = fmt.Sprintf("%s%d", []string{"ka", "lo", "mi", "ne", "ru", "sa", "te", "vo"}[i%8], i)
	}
	zipf := rand.NewZipf(rng, 1.1, 2, vocabSize-1)
	const rooms, messages = 20, 100_000
	var roomIDs []id.RoomID
	for range rooms {
		r, err := alice.CreateRoom(bg, &mautrix.ReqCreateRoom{})
		if err != nil {
			b.Fatal(err)
		}
		roomIDs = append(roomIDs, r.RoomID)
	}
	db := srv.HS.DB
	start := time.Now()
	const batch = 2000
	depth := int64(1000)
	for done := 0; done < messages; done += batch {
		err := db.DoTxn(bg, nil, func(ctx context.Context) error {
			first, err := db.AllocStreamPos(ctx, batch)
			if err != nil {
				return err
			}
			for i := range batch {
				words := make([]string, 4+rng.IntN(12))
				for w := range words {
					words[w] = vocab[zipf.Uint64()]
				}
				roomID := roomIDs[(done+i)%rooms]
				depth++
				pos := first - batch + 1 + int64(i)
				pdu, _ := json.Marshal(map[string]any{"type": "m.room.message", "room_id": roomID, "sender": alice.UserID,
					"content": map[string]any{"msgtype": "m.text", "body": strings.Join(words, " ")}, "origin_server_ts": pos})
				if err := db.InsertEvent(ctx, &storage.Event{StreamPos: pos, EventID: id.EventID(fmt.Sprintf("$bench%d", pos)),
					RoomID: roomID, Type: "m.room.message", Sender: alice.UserID, Depth: depth, OriginServerTS: pos, PDU: pdu}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	fmt.Printf("bench search setup db=%s messages=%d rooms=%d insert_s=%.1f\n", dialect, messages, rooms, time.Since(start).Seconds())

	kinds := []struct {
		name  string
		order string
		word  func() string
	}{
		// Words from the whole vocabulary, as a user might type them:
		// mostly rare, some in tens of thousands of messages.
		{"typical_rank", "rank", func() string { return vocab[zipf.Uint64()] }},
		{"typical_recent", "recent", func() string { return vocab[zipf.Uint64()] }},
		// The commonest words, matching the most messages.
		{"common_rank", "rank", func() string { return vocab[rng.IntN(20)] }},
		// Two words, both required.
		{"two_words_rank", "rank", func() string { return vocab[zipf.Uint64()] + " " + vocab[zipf.Uint64()] }},
		// A prefix of four characters.
		{"prefix_rank", "rank", func() string { w := vocab[zipf.Uint64()]; return w[:max(3, len(w)-1)] }},
	}
	const queries = 300
	b.ResetTimer()
	for _, k := range kinds {
		var took []time.Duration
		results := 0
		for range queries {
			t0 := time.Now()
			resp, err := alice.Search(bg, &mautrix.ReqSearch{SearchTerm: k.word(), OrderBy: k.order})
			took = append(took, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			results += resp.Count
		}
		slices.Sort(took)
		p := func(q float64) float64 { return float64(took[int(q*float64(len(took)-1))].Microseconds()) / 1000 }
		fmt.Printf("bench search db=%s kind=%s queries=%d mean_count=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n",
			dialect, k.name, queries, results/queries, p(0.50), p(0.99), p(1))
		b.ReportMetric(p(0.99), k.name+"_p99_ms")
	}
}
