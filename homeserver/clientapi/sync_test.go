package clientapi_test

import (
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestSyncAccountDataToDeviceAndPresence(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.SetAccountData(ctx, "org.example.settings", map[string]any{"theme": "dark"}); err != nil {
			t.Fatal(err)
		}
		if err := alice.AddTag(ctx, roomID, "m.favourite", 0.5); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendToDevice(ctx, event.NewEventType("org.example.ping"), &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{alice.UserID: {"*": {Raw: map[string]any{"n": 1}}}},
		}); err != nil {
			t.Fatal(err)
		}
		if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "brewing"}); err != nil {
			t.Fatal(err)
		}
		next, err := alice.SyncRequest(ctx, 0, first.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		foundSettings := false
		for _, e := range next.AccountData.Events {
			if e.Type.Type == "org.example.settings" {
				foundSettings = true
			}
		}
		if !foundSettings {
			t.Fatalf("global account data missing: %+v", next.AccountData.Events)
		}
		jr := next.Rooms.Join[roomID]
		if jr == nil || len(jr.AccountData.Events) != 1 || jr.AccountData.Events[0].Type.Type != "m.tag" {
			t.Fatalf("room account data (tags) missing: %+v", jr)
		}
		if len(next.ToDevice.Events) != 1 || next.ToDevice.Events[0].Sender != bob.UserID {
			t.Fatalf("to-device = %+v", next.ToDevice.Events)
		}
		raw, _ := json.Marshal(next.ToDevice.Events[0].Content.Raw)
		if string(raw) != `{"n":1}` {
			t.Fatalf("to-device content %s", raw)
		}
		foundPresence := false
		for _, e := range next.Presence.Events {
			if e.Sender == bob.UserID {
				_ = e.Content.ParseRaw(event.EphemeralEventPresence)
				if p := e.Content.AsPresence(); p.StatusMessage == "brewing" {
					foundPresence = true
				}
			}
		}
		if !foundPresence {
			t.Fatalf("bob's presence missing: %+v", next.Presence.Events)
		}
		// A client that lost that response repeats its old token and gets
		// the message again: nothing is acknowledged yet.
		retry, err := alice.SyncRequest(ctx, 0, first.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if len(retry.ToDevice.Events) != 1 {
			t.Fatalf("unacknowledged to-device message lost on retry: %+v", retry.ToDevice.Events)
		}
		// Syncing on from next_batch acknowledges it: it is gone for good.
		after, err := alice.SyncRequest(ctx, 0, retry.NextBatch, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if len(after.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged to-device message delivered again: %+v", after.ToDevice.Events)
		}
	})
}

func TestSyncFiltersForgetAndState(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Filtered"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			sendText(t, alice, roomID, "from alice")
			sendText(t, bob, roomID, "from bob")
		}
		// A stored filter: only bob's messages, 3 per timeline, lazy members.
		filter := &mautrix.Filter{Room: &mautrix.RoomFilter{
			Timeline: &mautrix.FilterPart{Limit: 3, Senders: []id.UserID{bob.UserID}, Types: []event.Type{event.EventMessage}},
			State:    &mautrix.FilterPart{LazyLoadMembers: true},
		}}
		created2, err := alice.CreateFilter(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := alice.SyncRequest(ctx, 0, "", created2.FilterID, false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		jr := resp.Rooms.Join[roomID]
		if jr == nil {
			t.Fatal("room missing")
		}
		if got := bodies(jr.Timeline.Events); len(got) != 3 || got[0] != "from bob" {
			t.Fatalf("filtered timeline = %q", got)
		}
		if !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
			t.Fatal("a cut timeline must be limited with a prev_batch")
		}
		for _, e := range jr.State.Events {
			if e.Type == event.StateMember && e.GetStateKey() != string(bob.UserID) && e.GetStateKey() != string(alice.UserID) {
				t.Fatalf("lazy loading sent an unrelated member %s", e.GetStateKey())
			}
		}
		if jr.Summary.JoinedMemberCount == nil || *jr.Summary.JoinedMemberCount != 2 {
			t.Fatalf("summary = %+v", jr.Summary)
		}
		// /state returns the full current state.
		state, err := bob.State(ctx, roomID)
		if err != nil || state[event.StateRoomName][""] == nil || len(state[event.StateMember]) != 2 {
			t.Fatalf("state = %v, %v", state, err)
		}
		// Leave and forget: the room never shows up in bob's syncs again.
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.ForgetRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		all, err := bob.SyncRequest(ctx, 0, "", `{"room":{"include_leave":true}}`, false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if all.Rooms.Leave[roomID] != nil || all.Rooms.Join[roomID] != nil {
			t.Fatalf("forgotten room still synced: %+v", all.Rooms)
		}
	})
}

// TestSyncToDeviceBacklog: a device with 250 to-device messages waiting
// gets them 100 per sync, in order, each once; the syncs after a partial
// one answer at once (long-poll or not) until the backlog is gone; a
// repeated token gets its batch again; then a long-poll waits.
func TestSyncToDeviceBacklog(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		const total = 250
		for start := 0; start < total; start += 50 {
			msgs := map[id.DeviceID]*event.Content{}
			req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{alice.UserID: msgs}}
			// One message per request: each its own position, in order.
			for n := start; n < start+50; n++ {
				msgs[alice.DeviceID] = &event.Content{Raw: map[string]any{"n": n}}
				if _, err := bob.SendToDevice(ctx, event.NewEventType("org.example.ping"), req); err != nil {
					t.Fatal(err)
				}
			}
		}
		since, next := first.NextBatch, 0
		for _, want := range []int{100, 100, 50} {
			began := time.Now()
			resp, err := alice.SyncRequest(ctx, 30_000, since, "", false, event.PresenceOnline)
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(began); d > 5*time.Second {
				t.Fatalf("sync with %d messages waiting took %v", want, d)
			}
			if len(resp.ToDevice.Events) != want {
				t.Fatalf("got %d to-device messages, want %d (token %s)", len(resp.ToDevice.Events), want, since)
			}
			if want == 100 {
				// Lost response: the same token gets the same batch.
				again, err := alice.SyncRequest(ctx, 0, since, "", false, event.PresenceOnline)
				if err != nil || len(again.ToDevice.Events) != 100 || again.ToDevice.Events[0].Content.Raw["n"] != resp.ToDevice.Events[0].Content.Raw["n"] {
					t.Fatalf("repeated token: %d messages, %v", len(again.ToDevice.Events), err)
				}
			}
			for _, e := range resp.ToDevice.Events {
				if n, _ := e.Content.Raw["n"].(float64); int(n) != next {
					t.Fatalf("message %v, want n=%d", e.Content.Raw, next)
				}
				next++
			}
			since = resp.NextBatch
		}
		began := time.Now()
		resp, err := alice.SyncRequest(ctx, 300, since, "", false, event.PresenceOnline)
		if err != nil || len(resp.ToDevice.Events) != 0 || time.Since(began) < 250*time.Millisecond {
			t.Fatalf("after the backlog: %d messages after %v, %v; want an empty long-poll", len(resp.ToDevice.Events), time.Since(began), err)
		}
	})
}
