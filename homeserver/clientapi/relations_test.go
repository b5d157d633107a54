package clientapi_test

import (
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// publicRoom creates a public room and joins the others to it.
func publicRoom(t *testing.T, creator *mautrix.Client, others ...*mautrix.Client) id.RoomID {
	t.Helper()
	created, err := creator.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, cli := range others {
		if _, err := cli.JoinRoomByID(ctx, created.RoomID); err != nil {
			t.Fatal(err)
		}
	}
	return created.RoomID
}

func sendRaw(t *testing.T, cli *mautrix.Client, roomID id.RoomID, evtType event.Type, content map[string]any) id.EventID {
	t.Helper()
	resp, err := cli.SendMessageEvent(ctx, roomID, evtType, content)
	if err != nil {
		t.Fatalf("send %s: %v", evtType.Type, err)
	}
	return resp.EventID
}

func sendEdit(t *testing.T, cli *mautrix.Client, roomID id.RoomID, original id.EventID, body string) id.EventID {
	t.Helper()
	return sendRaw(t, cli, roomID, event.EventMessage, map[string]any{
		"msgtype": "m.text", "body": "* " + body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": original},
	})
}

func reactionContent(target id.EventID, key string) map[string]any {
	return map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": target, "key": key}}
}

func sendReaction(t *testing.T, cli *mautrix.Client, roomID id.RoomID, target id.EventID, key string) id.EventID {
	t.Helper()
	return sendRaw(t, cli, roomID, event.EventReaction, reactionContent(target, key))
}

// sendThreaded posts into root's thread with the reply fallback for
// clients that do not know threads.
func sendThreaded(t *testing.T, cli *mautrix.Client, roomID id.RoomID, root, replyTo id.EventID, body string) id.EventID {
	t.Helper()
	return sendRaw(t, cli, roomID, event.EventMessage, threadedContent(root, replyTo, body))
}

func threadedContent(root, replyTo id.EventID, body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body, "m.relates_to": map[string]any{
		"rel_type": "m.thread", "event_id": root, "is_falling_back": true,
		"m.in_reply_to": map[string]any{"event_id": replyTo},
	}}
}

func getRelations(t *testing.T, cli *mautrix.Client, roomID id.RoomID, eventID id.EventID, req *mautrix.ReqGetRelations) *mautrix.RespGetRelations {
	t.Helper()
	resp, err := cli.GetRelations(ctx, roomID, eventID, req)
	if err != nil {
		t.Fatalf("relations of %s: %v", eventID, err)
	}
	return resp
}

func ids(events []*event.Event) []id.EventID {
	out := []id.EventID{}
	for _, e := range events {
		out = append(out, e.ID)
	}
	return out
}

func wantIDs(t *testing.T, what string, got []*event.Event, want ...id.EventID) {
	t.Helper()
	if want == nil {
		want = []id.EventID{}
	}
	if g := ids(got); !slices.Equal(g, want) {
		t.Fatalf("%s = %v, want %v", what, g, want)
	}
}

type respThreads struct {
	Chunk     []*event.Event `json:"chunk"`
	NextBatch string         `json:"next_batch"`
}

func getThreads(t *testing.T, cli *mautrix.Client, roomID id.RoomID, query map[string]string) *respThreads {
	t.Helper()
	var resp respThreads
	u := cli.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "rooms", roomID, "threads"}, query)
	if _, err := cli.MakeRequest(ctx, http.MethodGet, u, nil, &resp); err != nil {
		t.Fatalf("threads: %v", err)
	}
	return &resp
}

func mustErrCode(t *testing.T, err error, code string, status int) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.RespError == nil || httpErr.RespError.ErrCode != code || httpErr.Response.StatusCode != status {
		t.Fatalf("want %s (HTTP %d), got %v", code, status, err)
	}
}

func TestRelations(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		roomID := publicRoom(t, alice, bob)

		root := sendText(t, alice, roomID, "I like cake")
		// A rich reply has no rel_type: it is not a relation.
		sendRaw(t, bob, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "me too",
			"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": root}}})
		edit1 := sendEdit(t, alice, roomID, root, "I like chocolate cake")
		// The latest edit is chosen by origin_server_ts, ties broken by
		// event ID (spec): keep the two edits in different milliseconds so
		// "latest" is the one sent last.
		time.Sleep(2 * time.Millisecond)
		edit2 := sendEdit(t, alice, roomID, root, "I like lemon cake")
		bobEdit := sendEdit(t, bob, roomID, root, "I hate cake") // not the sender: no valid edit
		r1 := sendReaction(t, bob, roomID, root, "👍")
		r2 := sendReaction(t, alice, roomID, root, "👍")
		r3 := sendReaction(t, alice, roomID, root, "🍰")
		_, err := bob.SendMessageEvent(ctx, roomID, event.EventReaction, reactionContent(root, "👍"))
		mustErrCode(t, err, "M_DUPLICATE_ANNOTATION", http.StatusBadRequest)
		ref1 := sendRaw(t, bob, roomID, event.NewEventType("org.example.note"), map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": root}})
		ref2 := sendRaw(t, alice, roomID, event.NewEventType("org.example.note"), map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": ref1}})
		seen := sendReaction(t, alice, roomID, ref1, "👀")

		all := []id.EventID{ref1, r3, r2, r1, bobEdit, edit2, edit1}
		resp := getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{Limit: 50})
		wantIDs(t, "all relations", resp.Chunk, all...)
		if resp.NextBatch != "" || resp.PrevBatch != "" || resp.RecursionDepth != 0 {
			t.Fatalf("single page: next %q prev %q depth %d", resp.NextBatch, resp.PrevBatch, resp.RecursionDepth)
		}
		if resp.Chunk[0].RoomID != roomID {
			t.Fatalf("relations chunk lacks room_id: %+v", resp.Chunk[0])
		}
		reactions := getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{
			RelationType: event.RelAnnotation, EventType: event.EventReaction, Limit: 50})
		wantIDs(t, "reactions", reactions.Chunk, r3, r2, r1)
		var keys []string
		for _, e := range reactions.Chunk {
			_ = e.Content.ParseRaw(e.Type)
			keys = append(keys, e.Content.AsReaction().RelatesTo.Key)
		}
		if !slices.Equal(keys, []string{"🍰", "👍", "👍"}) {
			t.Fatalf("reaction keys = %q", keys)
		}
		wantIDs(t, "edits", getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{RelationType: event.RelReplace}).Chunk,
			bobEdit, edit2, edit1)
		wantIDs(t, "messages that are edits", getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{
			RelationType: event.RelReplace, EventType: event.EventReaction}).Chunk)

		// recurse follows relations of relations, filtered all the way.
		rec := getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{Recurse: true, Limit: 50})
		wantIDs(t, "recursive relations", rec.Chunk, append([]id.EventID{seen, ref2}, all...)...)
		if rec.RecursionDepth < 3 {
			t.Fatalf("recursion_depth = %d", rec.RecursionDepth)
		}
		wantIDs(t, "recursive references", getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{
			RelationType: event.RelReference, Recurse: true}).Chunk, ref2, ref1)
		// The 👀 annotates the reference, which the filter leaves out.
		wantIDs(t, "recursive annotations", getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{
			RelationType: event.RelAnnotation, Recurse: true, Limit: 50}).Chunk, r3, r2, r1)

		// Paging backwards, three at a time, then forwards.
		var paged []id.EventID
		var tokens []string
		for from := ""; ; {
			page := getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{Limit: 3, From: from})
			if len(page.Chunk) > 3 || (from != "" && page.PrevBatch != from) {
				t.Fatalf("page from %q: %d events, prev_batch %q", from, len(page.Chunk), page.PrevBatch)
			}
			paged = append(paged, ids(page.Chunk)...)
			if page.NextBatch == "" {
				break
			}
			tokens = append(tokens, page.NextBatch)
			from = page.NextBatch
		}
		if !slices.Equal(paged, all) {
			t.Fatalf("paged backwards = %v, want %v", paged, all)
		}
		paged = nil
		for from := ""; ; {
			page := getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{Limit: 2, From: from, Dir: mautrix.DirectionForward})
			paged = append(paged, ids(page.Chunk)...)
			if page.NextBatch == "" {
				break
			}
			from = page.NextBatch
		}
		reversed := slices.Clone(all)
		slices.Reverse(reversed)
		if !slices.Equal(paged, reversed) {
			t.Fatalf("paged forwards = %v, want %v", paged, reversed)
		}
		// to stops at a token of an earlier page.
		wantIDs(t, "relations up to the second page's end", getRelations(t, alice, roomID, root,
			&mautrix.ReqGetRelations{Limit: 50, To: tokens[1]}).Chunk, all[:6]...)
		// Tokens from /messages work too.
		msgs, err := alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 3)
		if err != nil {
			t.Fatal(err)
		}
		if msgs.End == "" {
			t.Fatal("/messages gave no end token although older events remain")
		}
		// Paging on from the end of that page skips the children it showed.
		var older []id.EventID
		for _, eid := range all {
			if !slices.ContainsFunc(msgs.Chunk, func(e *event.Event) bool { return e.ID == eid }) {
				older = append(older, eid)
			}
		}
		wantIDs(t, "relations from a /messages token", getRelations(t, alice, roomID, root,
			&mautrix.ReqGetRelations{Limit: 50, From: msgs.End}).Chunk, older...)

		// Bundled aggregations: the latest valid edit (the content itself
		// stays), the references; annotations are not aggregated.
		checkBundle := func(what string, e *event.Event, wantEdit id.EventID, wantBody string) {
			t.Helper()
			_ = e.Content.ParseRaw(e.Type)
			if body := e.Content.AsMessage().Body; body != wantBody {
				t.Fatalf("%s: body %q, want %q", what, body, wantBody)
			}
			rel := e.Unsigned.Relations
			if got := rel.GetLatestEdit(); (got == nil) != (wantEdit == "") || (got != nil && got.ID != wantEdit) {
				t.Fatalf("%s: m.replace = %+v, want %s", what, got, wantEdit)
			}
			if wantEdit != "" {
				latest := rel.GetLatestEdit()
				newContent, _ := latest.Content.Raw["m.new_content"].(map[string]any)
				if latest.Sender != alice.UserID || latest.Type != event.EventMessage || newContent["body"] == nil {
					t.Fatalf("%s: m.replace is not the whole edit event: %+v", what, latest)
				}
			}
			if got := rel.GetReferences().GetEventIDs(); !slices.Equal(got, []id.EventID{ref1}) {
				t.Fatalf("%s: m.reference = %v", what, got)
			}
			if rel.GetThread() != nil {
				t.Fatalf("%s: unexpected m.thread", what)
			}
		}
		ev, err := alice.GetEvent(ctx, roomID, root)
		if err != nil {
			t.Fatal(err)
		}
		checkBundle("/event", ev, edit2, "I like cake")
		var raw struct {
			Unsigned struct {
				Relations map[string]any `json:"m.relations"`
			} `json:"unsigned"`
		}
		if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "rooms", roomID, "event", root), nil, &raw); err != nil {
			t.Fatal(err)
		}
		if _, ok := raw.Unsigned.Relations["m.annotation"]; ok || len(raw.Unsigned.Relations) != 2 {
			t.Fatalf("bundle keys: %v", raw.Unsigned.Relations)
		}
		msgs, err = bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range msgs.Chunk {
			if e.ID == root {
				checkBundle("/messages", e, edit2, "I like cake")
			}
		}
		// Each edit is itself a relation of nothing: no bundle on it.
		if ev, err := alice.GetEvent(ctx, roomID, edit2); err != nil || ev.Unsigned.Relations != nil {
			t.Fatalf("edit event = %+v, %v", ev, err)
		}

		// Redacting the latest edit falls back to the one before; a
		// redacted reaction no longer counts.
		if _, err := alice.RedactEvent(ctx, roomID, edit2); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.RedactEvent(ctx, roomID, r1); err != nil {
			t.Fatal(err)
		}
		ev, _ = alice.GetEvent(ctx, roomID, root)
		checkBundle("/event after redacting the latest edit", ev, edit1, "I like cake")
		wantIDs(t, "reactions after a redaction", getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{
			RelationType: event.RelAnnotation}).Chunk, r3, r2)
		// Bob may react again once his reaction is gone.
		sendReaction(t, bob, roomID, root, "👍")

		// A redacted original gets no edit bundle.
		if _, err := alice.RedactEvent(ctx, roomID, root); err != nil {
			t.Fatal(err)
		}
		ev, _ = alice.GetEvent(ctx, roomID, root)
		checkBundle("/event of the redacted original", ev, "", "")

		// Bad requests.
		_, err = alice.GetRelations(ctx, roomID, "$nope", &mautrix.ReqGetRelations{})
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = alice.GetRelations(ctx, roomID, root, &mautrix.ReqGetRelations{From: "bogus"})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		_, err = alice.GetRelations(ctx, roomID, root, &mautrix.ReqGetRelations{Dir: 'x'})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
	})
}

func TestThreads(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		roomID := publicRoom(t, alice, bob, carol)

		lunch := sendText(t, alice, roomID, "Lunch?")
		deploy := sendText(t, bob, roomID, "Deploy today?")
		sendText(t, alice, roomID, "no thread here")
		l1 := sendThreaded(t, bob, roomID, lunch, lunch, "Sure")
		d1 := sendThreaded(t, carol, roomID, deploy, deploy, "After lunch")
		d2 := sendThreaded(t, bob, roomID, deploy, d1, "OK")
		l2 := sendThreaded(t, alice, roomID, lunch, l1, "12:30?")
		l2edit := sendEdit(t, alice, roomID, l2, "12:45?")

		// No thread can start from an event that has a relation.
		_, err := bob.SendMessageEvent(ctx, roomID, event.EventMessage, threadedContent(l1, l1, "nested"))
		mustErrCode(t, err, "M_UNKNOWN", http.StatusBadRequest)

		wantIDs(t, "thread events", getRelations(t, bob, roomID, lunch, &mautrix.ReqGetRelations{RelationType: event.RelThread}).Chunk, l2, l1)

		// Threads, most recently active first, with their summaries.
		threads := getThreads(t, alice, roomID, nil)
		wantIDs(t, "threads", threads.Chunk, lunch, deploy)
		if threads.NextBatch != "" {
			t.Fatalf("next_batch %q on the only page", threads.NextBatch)
		}
		checkThread := func(what string, e *event.Event, count int, latest id.EventID, participated bool) *event.Event {
			t.Helper()
			th := e.Unsigned.Relations.GetThread()
			if th == nil || th.Count != count || th.LatestEvent == nil || th.LatestEvent.ID != latest || th.CurrentUserParticipated != participated {
				t.Fatalf("%s: m.thread = %+v, want count %d latest %s participated %v", what, th, count, latest, participated)
			}
			return th.LatestEvent
		}
		latest := checkThread("lunch for alice", threads.Chunk[0], 2, l2, true)
		if latest.RoomID != roomID || latest.Sender != alice.UserID {
			t.Fatalf("latest_event is not a whole event: %+v", latest)
		}
		// The latest event carries its own aggregation: its edit.
		if edit := latest.Unsigned.Relations.GetLatestEdit(); edit == nil || edit.ID != l2edit {
			t.Fatalf("latest_event's m.replace = %+v", edit)
		}
		checkThread("deploy for alice", threads.Chunk[1], 2, d2, false)
		ev, err := carol.GetEvent(ctx, roomID, deploy)
		if err != nil {
			t.Fatal(err)
		}
		checkThread("deploy for carol", ev, 2, d2, true)

		wantIDs(t, "alice's threads", getThreads(t, alice, roomID, map[string]string{"include": "participated"}).Chunk, lunch)
		wantIDs(t, "carol's threads", getThreads(t, carol, roomID, map[string]string{"include": "participated"}).Chunk, deploy)
		wantIDs(t, "bob's threads", getThreads(t, bob, roomID, map[string]string{"include": "participated"}).Chunk, lunch, deploy)

		page1 := getThreads(t, bob, roomID, map[string]string{"limit": "1"})
		wantIDs(t, "first page", page1.Chunk, lunch)
		if page1.NextBatch == "" {
			t.Fatal("no next_batch after the first page")
		}
		page2 := getThreads(t, bob, roomID, map[string]string{"limit": "1", "from": page1.NextBatch})
		wantIDs(t, "second page", page2.Chunk, deploy)
		if page2.NextBatch != "" {
			if page3 := getThreads(t, bob, roomID, map[string]string{"limit": "1", "from": page2.NextBatch}); len(page3.Chunk) != 0 {
				t.Fatalf("third page = %v", ids(page3.Chunk))
			}
		}

		// New activity moves a thread to the top.
		d3 := sendThreaded(t, carol, roomID, deploy, d2, "Fine")
		threads = getThreads(t, alice, roomID, nil)
		wantIDs(t, "threads after new activity", threads.Chunk, deploy, lunch)
		checkThread("deploy after carol's reply", threads.Chunk[0], 3, d3, false)

		party := sendText(t, carol, roomID, "Party?")
		yes := sendThreaded(t, alice, roomID, party, party, "Yes!")

		// Ignored users' events are left out of thread summaries, and the
		// roots they sent are listed redacted.
		if err := alice.SetAccountData(ctx, event.AccountDataIgnoredUserList.Type, map[string]any{
			"ignored_users": map[id.UserID]any{carol.UserID: map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		ev, err = alice.GetEvent(ctx, roomID, deploy)
		if err != nil {
			t.Fatal(err)
		}
		checkThread("deploy with carol ignored", ev, 1, d2, false)
		threads = getThreads(t, alice, roomID, nil)
		wantIDs(t, "threads with carol ignored", threads.Chunk, party, deploy, lunch)
		if len(threads.Chunk[0].Content.Raw) != 0 {
			t.Fatalf("ignored user's thread root has content %v", threads.Chunk[0].Content.Raw)
		}
		checkThread("carol's thread for alice", threads.Chunk[0], 1, yes, true)
		if got := getThreads(t, bob, roomID, nil).Chunk[0]; len(got.Content.Raw) == 0 {
			t.Fatal("bob, who ignores nobody, sees carol's root redacted")
		}

		// Bad requests.
		u := alice.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "rooms", roomID, "threads"}, map[string]string{"include": "some"})
		_, err = alice.MakeRequest(ctx, http.MethodGet, u, nil, nil)
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		u = alice.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "rooms", roomID, "threads"}, map[string]string{"limit": "0"})
		_, err = alice.MakeRequest(ctx, http.MethodGet, u, nil, nil)
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		dave := srv.NewUser("dave")
		private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = dave.MakeRequest(ctx, http.MethodGet, dave.BuildClientURL("v1", "rooms", private.RoomID, "threads"), nil, nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
	})
}

func TestEventContext(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		roomID := publicRoom(t, alice, bob, carol)
		var m []id.EventID
		for i := range 10 {
			cli := alice
			if i%2 == 1 {
				cli = bob
			}
			m = append(m, sendText(t, cli, roomID, string(rune('a'+i))))
		}
		reaction := sendReaction(t, alice, roomID, m[5], "👍")

		resp, err := carol.Context(ctx, roomID, m[5], nil, 4)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Event == nil || resp.Event.ID != m[5] {
			t.Fatalf("event = %+v", resp.Event)
		}
		wantIDs(t, "events_before", resp.EventsBefore, m[4], m[3])
		wantIDs(t, "events_after", resp.EventsAfter, m[6], m[7])
		// start and end continue in /messages.
		back, err := carol.Messages(ctx, roomID, resp.Start, "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 2)
		if err != nil {
			t.Fatal(err)
		}
		wantIDs(t, "/messages before start", back.Chunk, m[2], m[1])
		fwd, err := carol.Messages(ctx, roomID, resp.End, "", mautrix.DirectionForward, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		wantIDs(t, "/messages after end", fwd.Chunk, m[8], m[9], reaction)
		members := func(state []*event.Event) []string {
			var out []string
			for _, e := range state {
				if e.Type == event.StateMember {
					out = append(out, *e.StateKey)
				}
			}
			slices.Sort(out)
			return out
		}
		hasCreate := slices.ContainsFunc(resp.State, func(e *event.Event) bool { return e.Type == event.StateCreate })
		if got := members(resp.State); !hasCreate || len(got) != 3 {
			t.Fatalf("state: create %v, members %q", hasCreate, got)
		}

		// The filter applies to the context and the state, not the event.
		resp, err = carol.Context(ctx, roomID, m[4], &mautrix.FilterPart{Senders: []id.UserID{bob.UserID}}, 4)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Event.ID != m[4] {
			t.Fatalf("filtered context event = %s", resp.Event.ID)
		}
		wantIDs(t, "bob's events_before", resp.EventsBefore, m[3], m[1])
		wantIDs(t, "bob's events_after", resp.EventsAfter, m[5], m[7])
		for _, e := range resp.State {
			if e.Sender != bob.UserID {
				t.Fatalf("filtered state has %s from %s", e.Type.Type, e.Sender)
			}
		}
		// Lazy-loading: only the members who sent the returned events.
		resp, err = carol.Context(ctx, roomID, m[5], &mautrix.FilterPart{LazyLoadMembers: true}, 2)
		if err != nil {
			t.Fatal(err)
		}
		wantIDs(t, "lazy events_before", resp.EventsBefore, m[4])
		wantIDs(t, "lazy events_after", resp.EventsAfter, m[6])
		if got, want := members(resp.State), []string{string(alice.UserID), string(bob.UserID)}; !slices.Equal(got, want) {
			t.Fatalf("lazy-loaded members = %q, want %q", got, want)
		}
		// The events carry their bundled aggregations; limit 0 still
		// returns the event.
		edit := sendEdit(t, bob, roomID, m[5], "f!")
		// (mautrix's Context leaves limit 0 out.)
		u := carol.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "rooms", roomID, "context", m[5]}, map[string]string{"limit": "0"})
		resp = nil
		if _, err := carol.MakeRequest(ctx, http.MethodGet, u, nil, &resp); err != nil {
			t.Fatal(err)
		}
		if len(resp.EventsBefore)+len(resp.EventsAfter) != 0 || resp.Event.Unsigned.Relations.GetLatestEdit().ID != edit {
			t.Fatalf("limit 0 context: %d before, %d after, relations %+v", len(resp.EventsBefore), len(resp.EventsAfter), resp.Event.Unsigned.Relations)
		}

		// Events a user may not see are not found.
		dave := srv.NewUser("dave")
		_, err = dave.Context(ctx, roomID, m[5], nil, 4)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = carol.Context(ctx, roomID, "$nope", nil, 4)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		// The r0 prefix serves it too.
		var r0 mautrix.RespContext
		if _, err := carol.MakeRequest(ctx, http.MethodGet, carol.BuildURL(mautrix.ClientURLPath{"r0", "rooms", roomID, "context", m[5]}), nil, &r0); err != nil || r0.Event.ID != m[5] {
			t.Fatalf("r0 context: %+v, %v", r0.Event, err)
		}
	})
}

func TestRelationsHistoryVisibility(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		early := sendText(t, alice, roomID, "before bob")
		sendReaction(t, alice, roomID, early, "👍")
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		// Bob cannot see the parent: 404, as if it did not exist.
		_, err = bob.GetRelations(ctx, roomID, early, &mautrix.ReqGetRelations{})
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = bob.Context(ctx, roomID, early, nil, 4)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)

		root := sendText(t, alice, roomID, "after bob")
		seen := sendReaction(t, alice, roomID, root, "👍")
		threaded := sendThreaded(t, alice, roomID, root, root, "in thread")
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		edit := sendEdit(t, alice, roomID, root, "edited after bob left")
		party := sendReaction(t, alice, roomID, root, "🎉")
		later := sendThreaded(t, alice, roomID, root, threaded, "later in thread")

		// Bob sees only the relations sent while he could see the room.
		wantIDs(t, "bob's relations", getRelations(t, bob, roomID, root, &mautrix.ReqGetRelations{Limit: 50}).Chunk, threaded, seen)
		wantIDs(t, "alice's relations", getRelations(t, alice, roomID, root, &mautrix.ReqGetRelations{Limit: 50}).Chunk,
			later, party, edit, threaded, seen)
		ev, err := bob.GetEvent(ctx, roomID, root)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Unsigned.Relations.GetLatestEdit() != nil {
			t.Fatal("bob sees an edit sent after he left")
		}
		if th := ev.Unsigned.Relations.GetThread(); th == nil || th.Count != 1 || th.LatestEvent.ID != threaded {
			t.Fatalf("bob's m.thread = %+v", th)
		}
		ev, err = alice.GetEvent(ctx, roomID, root)
		if err != nil {
			t.Fatal(err)
		}
		if e := ev.Unsigned.Relations.GetLatestEdit(); e == nil || e.ID != edit {
			t.Fatalf("alice's m.replace = %+v", e)
		}
		if th := ev.Unsigned.Relations.GetThread(); th == nil || th.Count != 2 || th.LatestEvent.ID != later {
			t.Fatalf("alice's m.thread = %+v", th)
		}
	})
}
