package clientapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// expectWake fails unless write wakes the syncs waiting on user.
func expectWake(t *testing.T, srv *hstest.Server, user id.UserID, write func()) {
	t.Helper()
	l := srv.HS.Notifier.Listen(user)
	defer l.Close()
	write()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if !l.Wait(wctx) {
		t.Fatalf("%s was not woken", user)
	}
}

// streamPos is the server's current stream position.
func streamPos(t *testing.T, srv *hstest.Server) int64 {
	t.Helper()
	pos, err := srv.HS.DB.CurrentStreamPos(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

func TestAccountData(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		const room = id.RoomID("!room:localhost")

		var got map[string]any
		mustErr(t, alice.GetAccountData(ctx, "com.example.config", &got), mautrix.MNotFound, http.StatusNotFound)

		expectWake(t, srv, alice.UserID, func() {
			if err := alice.SetAccountData(ctx, "com.example.config", map[string]any{"theme": "dark", "html": "<b>"}); err != nil {
				t.Fatalf("set account data: %v", err)
			}
		})
		if err := alice.GetAccountData(ctx, "com.example.config", &got); err != nil || got["theme"] != "dark" || got["html"] != "<b>" {
			t.Fatalf("get account data = %v, %v", got, err)
		}
		// Overwrite.
		if err := alice.SetAccountData(ctx, "com.example.config", map[string]any{"theme": "light"}); err != nil {
			t.Fatal(err)
		}
		got = nil
		if err := alice.GetAccountData(ctx, "com.example.config", &got); err != nil || len(got) != 1 || got["theme"] != "light" {
			t.Fatalf("after overwrite = %v, %v", got, err)
		}

		// Room account data is separate from global data of the same type.
		expectWake(t, srv, alice.UserID, func() {
			if err := alice.SetRoomAccountData(ctx, room, "com.example.config", map[string]any{"pinned": true}); err != nil {
				t.Fatalf("set room account data: %v", err)
			}
		})
		got = nil
		if err := alice.GetRoomAccountData(ctx, room, "com.example.config", &got); err != nil || got["pinned"] != true || len(got) != 1 {
			t.Fatalf("get room account data = %v, %v", got, err)
		}
		mustErr(t, alice.GetRoomAccountData(ctx, "!other:localhost", "com.example.config", &got), mautrix.MNotFound, http.StatusNotFound)
		mustErr(t, bob.GetAccountData(ctx, "com.example.config", &got), mautrix.MNotFound, http.StatusNotFound)

		// What the sync code will read.
		global, rooms, err := srv.HS.DB.AccountDataSince(ctx, alice.UserID, 0, streamPos(t, srv))
		if err != nil || len(global) != 1 || global[0].Type != "com.example.config" || string(global[0].Content) != `{"theme":"light"}` ||
			len(rooms) != 1 || len(rooms[room]) != 1 || string(rooms[room][0].Content) != `{"pinned":true}` {
			t.Fatalf("account data for sync = %+v %+v %v", global, rooms, err)
		}

		// Only for yourself, reading or writing.
		for _, path := range []mautrix.ClientURLPath{
			{"v3", "user", alice.UserID, "account_data", "com.example.config"},
			{"v3", "user", alice.UserID, "rooms", room, "account_data", "com.example.config"},
		} {
			u := bob.BuildClientURL(path...)
			_, err := bob.MakeRequest(ctx, http.MethodPut, u, map[string]any{"evil": true}, nil)
			mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
			_, err = bob.MakeRequest(ctx, http.MethodGet, u, nil, nil)
			mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		}
		got = nil
		if err := alice.GetAccountData(ctx, "com.example.config", &got); err != nil || got["evil"] != nil {
			t.Fatalf("bob changed alice's account data: %v, %v", got, err)
		}

		// Types the server manages are refused with 405 M_BAD_JSON.
		for _, typ := range []string{"m.fully_read", "m.push_rules"} {
			mustErr(t, alice.SetAccountData(ctx, typ, map[string]any{"event_id": "$x"}), mautrix.MBadJSON, http.StatusMethodNotAllowed)
			mustErr(t, alice.SetRoomAccountData(ctx, room, typ, map[string]any{"event_id": "$x"}), mautrix.MBadJSON, http.StatusMethodNotAllowed)
			mustErr(t, alice.GetRoomAccountData(ctx, room, typ, &got), mautrix.MNotFound, http.StatusNotFound)
		}

		// Room IDs must be room IDs.
		mustErr(t, alice.SetRoomAccountData(ctx, "@notaroom:localhost", "com.example.x", map[string]any{}), mautrix.MInvalidParam, http.StatusBadRequest)
		mustErr(t, alice.GetRoomAccountData(ctx, "#alias:localhost", "com.example.x", &got), mautrix.MInvalidParam, http.StatusBadRequest)

		// Types are event types: at most 255 bytes.
		mustErr(t, alice.SetAccountData(ctx, strings.Repeat("t", 256), map[string]any{}), mautrix.MInvalidParam, http.StatusBadRequest)
		if err := alice.SetAccountData(ctx, strings.Repeat("t", 255), map[string]any{}); err != nil {
			t.Fatalf("255-byte type: %v", err)
		}

		// Content must be an object, and at most 64 KiB.
		mustErr(t, alice.SetAccountData(ctx, "com.example.list", []int{1, 2}), mautrix.MBadJSON, http.StatusBadRequest)
		big := map[string]string{"x": strings.Repeat("a", 64*1024)}
		mustErr(t, alice.SetAccountData(ctx, "com.example.big", big), mautrix.MTooLarge, http.StatusRequestEntityTooLarge)
		mustErr(t, alice.SetRoomAccountData(ctx, room, "com.example.big", big), mautrix.MTooLarge, http.StatusRequestEntityTooLarge)
		mustErr(t, alice.GetAccountData(ctx, "com.example.big", &got), mautrix.MNotFound, http.StatusNotFound)
		justFits := map[string]string{"x": strings.Repeat("a", 64*1024-len(`{"x":""}`))}
		if err := alice.SetAccountData(ctx, "com.example.big", justFits); err != nil {
			t.Fatalf("64 KiB of account data: %v", err)
		}
	})
}

func TestRoomTags(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		const room = id.RoomID("!room:localhost")

		tags, err := alice.GetTags(ctx, room)
		if err != nil || len(tags.Tags) != 0 {
			t.Fatalf("tags of an untagged room = %+v, %v", tags, err)
		}
		expectWake(t, srv, alice.UserID, func() {
			if err := alice.AddTag(ctx, room, event.RoomTagFavourite, 0.25); err != nil {
				t.Fatalf("add tag: %v", err)
			}
		})
		if err := alice.AddTagWithCustomData(ctx, room, "u.work", map[string]any{"order": 1, "com.example.colour": "red"}); err != nil {
			t.Fatal(err)
		}
		if err := alice.AddTagWithCustomData(ctx, room, "u.unordered", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		var raw struct {
			Tags map[string]map[string]any `json:"tags"`
		}
		if err := alice.GetTagsWithCustomData(ctx, room, &raw); err != nil {
			t.Fatal(err)
		}
		if len(raw.Tags) != 3 || raw.Tags["m.favourite"]["order"] != 0.25 || raw.Tags["u.work"]["order"] != 1.0 ||
			raw.Tags["u.work"]["com.example.colour"] != "red" || raw.Tags["u.unordered"] == nil || len(raw.Tags["u.unordered"]) != 0 {
			t.Fatalf("tags = %+v", raw.Tags)
		}

		// Tags are the room account data event m.tag, which is what sync shows.
		var content event.TagEventContent
		if err := alice.GetRoomAccountData(ctx, room, "m.tag", &content); err != nil || len(content.Tags) != 3 {
			t.Fatalf("m.tag = %+v, %v", content, err)
		}
		_, rooms, err := srv.HS.DB.AccountDataSince(ctx, alice.UserID, 0, streamPos(t, srv))
		if err != nil || len(rooms[room]) != 1 || rooms[room][0].Type != "m.tag" {
			t.Fatalf("room account data for sync = %+v, %v", rooms, err)
		}

		// order must be a number in [0, 1]; names at most 255 bytes.
		mustErr(t, alice.AddTag(ctx, room, "u.bad", 1.5), mautrix.MInvalidParam, http.StatusBadRequest)
		mustErr(t, alice.AddTag(ctx, room, "u.bad", -0.1), mautrix.MInvalidParam, http.StatusBadRequest)
		mustErr(t, alice.AddTagWithCustomData(ctx, room, "u.bad", map[string]any{"order": "0.5"}), mautrix.MBadJSON, http.StatusBadRequest)
		mustErr(t, alice.AddTagWithCustomData(ctx, room, "u.bad", map[string]any{"order": nil}), mautrix.MBadJSON, http.StatusBadRequest)
		mustErr(t, alice.AddTagWithCustomData(ctx, room, "u.bad", []any{}), mautrix.MBadJSON, http.StatusBadRequest)
		mustErr(t, alice.AddTag(ctx, room, event.RoomTag("u."+strings.Repeat("x", 254)), 0.5), mautrix.MInvalidParam, http.StatusBadRequest)
		if err := alice.AddTag(ctx, room, event.RoomTag("u."+strings.Repeat("x", 253)), 0); err != nil {
			t.Fatalf("255-byte tag: %v", err)
		}
		mustErr(t, alice.AddTag(ctx, "!", "u.x", 0.5), mautrix.MInvalidParam, http.StatusBadRequest)
		mustErr(t, alice.AddTag(ctx, "room", "u.x", 0.5), mautrix.MInvalidParam, http.StatusBadRequest)

		// Removing; removing an absent tag is fine and writes nothing.
		if err := alice.RemoveTag(ctx, room, event.RoomTag("u."+strings.Repeat("x", 253))); err != nil {
			t.Fatal(err)
		}
		expectWake(t, srv, alice.UserID, func() {
			if err := alice.RemoveTag(ctx, room, "u.work"); err != nil {
				t.Fatalf("remove tag: %v", err)
			}
		})
		before := streamPos(t, srv)
		if err := alice.RemoveTag(ctx, room, "u.never"); err != nil {
			t.Fatalf("remove absent tag: %v", err)
		}
		if streamPos(t, srv) != before {
			t.Errorf("removing an absent tag wrote something")
		}
		tags, err = alice.GetTags(ctx, room)
		if order, _ := tags.Tags["m.favourite"].Order.Float64(); err != nil || len(tags.Tags) != 2 || order != 0.25 {
			t.Fatalf("tags after removal = %+v, %v", tags, err)
		}
		// Removing the last tag leaves an empty m.tag, so syncs see it go.
		_ = alice.RemoveTag(ctx, room, "m.favourite")
		_ = alice.RemoveTag(ctx, room, "u.unordered")
		var empty map[string]any
		if err := alice.GetRoomAccountData(ctx, room, "m.tag", &empty); err != nil || len(empty["tags"].(map[string]any)) != 0 {
			t.Fatalf("m.tag after removing every tag = %v, %v", empty, err)
		}

		// Tags are private.
		u := bob.BuildClientURL("v3", "user", alice.UserID, "rooms", room, "tags")
		_, err = bob.MakeRequest(ctx, http.MethodGet, u, nil, nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		_, err = bob.MakeRequest(ctx, http.MethodPut, u+"/u.evil", map[string]any{}, nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		_, err = bob.MakeRequest(ctx, http.MethodDelete, u+"/u.evil", nil, nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		if tags, _ := bob.GetTags(ctx, room); len(tags.Tags) != 0 {
			t.Fatalf("bob sees alice's tags: %+v", tags)
		}
	})
}

func TestSendToDevice(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, func(c *config.Config) { c.HTTP.MaxBodyBytes = 16 * 1024 })
		alice := srv.NewUser("alice")
		alice2 := srv.Login("alice", pw)
		bob := srv.NewUser("bob")
		db := srv.HS.DB

		pending := func(cli *mautrix.Client) []storage.ToDeviceMessage {
			t.Helper()
			msgs, err := db.ToDeviceSince(ctx, cli.UserID, cli.DeviceID, 0, streamPos(t, srv), 100)
			if err != nil {
				t.Fatal(err)
			}
			return msgs
		}
		content := func(v map[string]any) *event.Content { return &event.Content{Raw: v} }

		// "*" reaches every device of alice; remote users are skipped.
		expectWake(t, srv, alice.UserID, func() {
			_, err := bob.SendToDevice(ctx, event.NewEventType("com.example.ping"), &mautrix.ReqSendToDevice{
				Messages: map[id.UserID]map[id.DeviceID]*event.Content{
					alice.UserID:            {"*": content(map[string]any{"n": 1})},
					bob.UserID:              {bob.DeviceID: content(map[string]any{"n": "self"}), "NOSUCHDEVICE": content(map[string]any{})},
					"@carol:remote.example": {"CAROL": content(map[string]any{"n": "remote"})},
					"@nobody:localhost":     {"*": content(map[string]any{"n": "nobody"})},
				},
			})
			if err != nil {
				t.Fatalf("send to device: %v", err)
			}
		})
		for _, cli := range []*mautrix.Client{alice, alice2} {
			msgs := pending(cli)
			if len(msgs) != 1 || msgs[0].Sender != bob.UserID || msgs[0].Type != "com.example.ping" || string(msgs[0].Content) != `{"n":1}` {
				t.Fatalf("%s's pending messages = %+v", cli.DeviceID, msgs)
			}
		}
		if msgs := pending(bob); len(msgs) != 1 || string(msgs[0].Content) != `{"n":"self"}` {
			t.Fatalf("bob's pending messages = %+v", msgs)
		}

		// A retransmission (same device, path and txnId) answers the same and
		// stores nothing.
		put := func(cli *mautrix.Client, evType, txn string, body any) error {
			var resp map[string]any
			_, err := cli.MakeRequest(ctx, http.MethodPut, cli.BuildClientURL("v3", "sendToDevice", evType, txn), body, &resp)
			if err == nil && len(resp) != 0 {
				t.Fatalf("response = %v, want {}", resp)
			}
			return err
		}
		toAlice2 := map[string]any{"messages": map[string]any{alice.UserID.String(): map[string]any{alice2.DeviceID.String(): map[string]any{"n": 2}}}}
		if err := put(bob, "com.example.ping", "txn-1", toAlice2); err != nil {
			t.Fatal(err)
		}
		before := streamPos(t, srv)
		if err := put(bob, "com.example.ping", "txn-1", toAlice2); err != nil {
			t.Fatalf("retransmission: %v", err)
		}
		if streamPos(t, srv) != before || len(pending(alice2)) != 2 {
			t.Fatalf("retransmission stored again: %+v", pending(alice2))
		}
		// Another device, or another path, with the same txnId is a new request.
		if err := put(alice, "com.example.ping", "txn-1", toAlice2); err != nil {
			t.Fatal(err)
		}
		if err := put(bob, "com.example.pong", "txn-1", toAlice2); err != nil {
			t.Fatal(err)
		}
		msgs := pending(alice2)
		if len(msgs) != 4 || msgs[2].Sender != alice.UserID || msgs[3].Type != "com.example.pong" {
			t.Fatalf("alice2's messages = %+v", msgs)
		}
		for i := 1; i < len(msgs); i++ {
			if msgs[i].StreamPos <= msgs[i-1].StreamPos {
				t.Fatalf("messages out of order: %+v", msgs)
			}
		}
		if len(pending(alice)) != 1 {
			t.Fatalf("alice's first device got messages meant for the second: %+v", pending(alice))
		}

		// Bad requests store nothing.
		before = streamPos(t, srv)
		mustErr(t, put(bob, "com.example.ping", "bad-1", map[string]any{}), mautrix.RespError{ErrCode: "M_MISSING_PARAM"}, http.StatusBadRequest)
		mustErr(t, put(bob, "com.example.ping", "bad-2", map[string]any{"messages": []any{}}), mautrix.MBadJSON, http.StatusBadRequest)
		mustErr(t, put(bob, "com.example.ping", "bad-3", map[string]any{"messages": map[string]any{"alice": map[string]any{"*": map[string]any{}}}}),
			mautrix.MInvalidParam, http.StatusBadRequest)
		mustErr(t, put(bob, "com.example.ping", "bad-4", map[string]any{"messages": map[string]any{alice.UserID.String(): map[string]any{"*": "text"}}}),
			mautrix.MBadJSON, http.StatusBadRequest)
		mustErr(t, put(bob, "com.example.ping", "bad-5", map[string]any{"messages": map[string]any{alice.UserID.String(): map[string]any{"*": nil}}}),
			mautrix.MBadJSON, http.StatusBadRequest)
		// The whole body is bounded by http.max_body_bytes.
		huge := map[string]any{"messages": map[string]any{alice.UserID.String(): map[string]any{"*": map[string]any{"x": strings.Repeat("a", 16*1024)}}}}
		mustErr(t, put(bob, "com.example.ping", "bad-6", huge), mautrix.MTooLarge, http.StatusRequestEntityTooLarge)
		if streamPos(t, srv) != before {
			t.Fatalf("a refused request stored messages")
		}
		// A refused request does not use up its txnId.
		if err := put(bob, "com.example.ping", "bad-4", toAlice2); err != nil {
			t.Fatal(err)
		}
		if len(pending(alice2)) != 5 {
			t.Fatalf("retry after failure not stored: %+v", pending(alice2))
		}

		// Paths are compared whole, even when a part contains '/'.
		for _, p := range [][2]string{{"com.example/x", "y"}, {"com.example", "x/y"}} {
			if err := put(bob, p[0], p[1], toAlice2); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(pending(alice2)); n != 7 {
			t.Fatalf("alice2 has %d messages, want 7", n)
		}
		mustErr(t, put(bob, "com.example.ping", strings.Repeat("t", 256), toAlice2), mautrix.MInvalidParam, http.StatusBadRequest)
		mustErr(t, put(bob, strings.Repeat("t", 256), "txn", toAlice2), mautrix.MInvalidParam, http.StatusBadRequest)

		// Syncing past messages deletes them (what /sync will do).
		if err := db.DeleteToDeviceUpTo(ctx, alice2.UserID, alice2.DeviceID, msgs[1].StreamPos); err != nil {
			t.Fatal(err)
		}
		if left := pending(alice2); len(left) != 5 || left[0].StreamPos != msgs[2].StreamPos {
			t.Fatalf("after acknowledging two: %+v", left)
		}
	})
}

func TestPresence(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")

		// A user who never set presence is offline.
		p, err := bob.GetPresence(ctx, alice.UserID)
		if err != nil || p.Presence != event.PresenceOffline || p.StatusMsg != "" {
			t.Fatalf("presence before any update = %+v, %v", p, err)
		}
		before := streamPos(t, srv)
		expectWake(t, srv, alice.UserID, func() {
			if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "in a meeting"}); err != nil {
				t.Fatalf("set presence: %v", err)
			}
		})
		var raw map[string]any
		_, err = bob.MakeRequest(ctx, http.MethodGet, bob.BuildClientURL("v3", "presence", alice.UserID, "status"), nil, &raw)
		if err != nil || raw["presence"] != "online" || raw["status_msg"] != "in a meeting" || raw["currently_active"] != true {
			t.Fatalf("presence = %v, %v", raw, err)
		}
		if ago, ok := raw["last_active_ago"].(float64); !ok || ago < 0 || ago > 60_000 {
			t.Fatalf("last_active_ago = %v", raw["last_active_ago"])
		}

		// What the sync code will read.
		ps, err := srv.HS.DB.PresenceSince(ctx, []id.UserID{alice.UserID, bob.UserID}, before, streamPos(t, srv))
		if err != nil || len(ps) != 1 || ps[0].UserID != alice.UserID || ps[0].Presence != event.PresenceOnline {
			t.Fatalf("presence for sync = %+v, %v", ps, err)
		}

		// Going offline without a status message clears it.
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOffline}); err != nil {
			t.Fatal(err)
		}
		raw = nil
		_, err = alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "presence", alice.UserID, "status"), nil, &raw)
		if err != nil || raw["presence"] != "offline" || raw["status_msg"] != nil || raw["currently_active"] != nil {
			t.Fatalf("presence after going offline = %v, %v", raw, err)
		}
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable}); err != nil {
			t.Fatal(err)
		}

		// Only for yourself; only the spec's states.
		_, err = bob.MakeRequest(ctx, http.MethodPut, bob.BuildClientURL("v3", "presence", alice.UserID, "status"),
			map[string]any{"presence": "online"}, nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		mustErr(t, alice.SetPresence(ctx, mautrix.ReqPresence{Presence: "away"}), mautrix.MInvalidParam, http.StatusBadRequest)
		_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "presence", alice.UserID, "status"),
			map[string]any{"status_msg": "no state"}, nil)
		mustErr(t, err, mautrix.RespError{ErrCode: "M_MISSING_PARAM"}, http.StatusBadRequest)
		_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "presence", alice.UserID, "status"),
			map[string]any{"presence": "online", "status_msg": 5}, nil)
		mustErr(t, err, mautrix.MBadJSON, http.StatusBadRequest)
		if p, err := bob.GetPresence(ctx, alice.UserID); err != nil || p.Presence != event.PresenceUnavailable {
			t.Fatalf("presence after refused updates = %+v, %v", p, err)
		}

		// Unknown and remote users have no presence.
		_, err = alice.GetPresence(ctx, "@nobody:localhost")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = alice.GetPresence(ctx, "@carol:remote.example")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = alice.GetPresence(ctx, "not-a-user-id")
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
	})
}

// The account data a client reads back is exactly the JSON it stored.
func TestAccountDataRoundTrip(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	alice := srv.NewUser("alice")
	in := json.RawMessage(`{"nested":{"list":[1,2.5,"three",null,true],"empty":{}},"unicode":"☃ \u003c"}`)
	if err := alice.SetAccountData(ctx, "com.example.raw", in); err != nil {
		t.Fatal(err)
	}
	var out json.RawMessage
	if err := alice.GetAccountData(ctx, "com.example.raw", &out); err != nil {
		t.Fatal(err)
	}
	var a, b any
	if json.Unmarshal(in, &a) != nil || json.Unmarshal(out, &b) != nil {
		t.Fatalf("bad JSON: %s", out)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatalf("round trip: sent %s, got %s", in, out)
	}
}
