package storage_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// roomFixture writes rooms and their current state straight into the
// tables the directories read.
type roomFixture struct {
	t  *testing.T
	db *storage.DB
	n  int
}

func (f *roomFixture) room(roomID id.RoomID, public bool) {
	f.t.Helper()
	if err := f.db.InsertRoom(ctx, &storage.Room{RoomID: roomID, Version: "12", Creator: "@creator:x", IsPublic: public, CreatedTS: 1}); err != nil {
		f.t.Fatal(err)
	}
}

// state stores a state event and makes it the room's current one.
func (f *roomFixture) state(roomID id.RoomID, evtType, stateKey string, content map[string]any) {
	f.t.Helper()
	f.n++
	pos, err := f.db.AllocStreamPos(ctx, 1)
	if err != nil {
		f.t.Fatal(err)
	}
	pdu, _ := json.Marshal(map[string]any{"type": evtType, "state_key": stateKey, "room_id": roomID, "sender": "@creator:x", "content": content})
	eventID := id.EventID(fmt.Sprintf("$event%d", f.n))
	e := &storage.Event{StreamPos: pos, EventID: eventID, RoomID: roomID, Type: evtType, StateKey: &stateKey,
		Sender: "@creator:x", Depth: int64(f.n), OriginServerTS: 1, PDU: pdu}
	if err := f.db.InsertEvent(ctx, e); err != nil {
		f.t.Fatal(err)
	}
	membership, _ := content["membership"].(string)
	if err := f.db.UpsertCurrentState(ctx, roomID, storage.StateKey{Type: evtType, StateKey: stateKey}, eventID, membership, pos); err != nil {
		f.t.Fatal(err)
	}
}

func (f *roomFixture) members(roomID id.RoomID, membership string, users ...id.UserID) {
	f.t.Helper()
	for _, u := range users {
		f.state(roomID, "m.room.member", string(u), map[string]any{"membership": membership})
	}
}

func roomIDs(rooms []storage.PublicRoom) string {
	var parts []string
	for _, r := range rooms {
		parts = append(parts, fmt.Sprintf("%s=%d", r.RoomID, r.JoinedMembers))
	}
	return strings.Join(parts, " ")
}

func ptr[T any](v T) *T { return &v }

func TestPublicRoomsListing(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		f := &roomFixture{t: t, db: db}
		for _, r := range []struct {
			id     id.RoomID
			public bool
		}{{"!a:x", true}, {"!b:x", true}, {"!c:x", true}, {"!d:x", false}, {"!e:x", true}} {
			f.room(r.id, r.public)
			f.state(r.id, "m.room.create", "", map[string]any{"room_version": "12"})
		}
		// !a: three joined, one invited, one left; renamed, so only the
		// current name counts.
		f.members("!a:x", "join", "@1:x", "@2:x", "@3:x")
		f.members("!a:x", "invite", "@4:x")
		f.members("!a:x", "leave", "@5:x")
		f.state("!a:x", "m.room.name", "", map[string]any{"name": "Old name"})
		f.state("!a:x", "m.room.name", "", map[string]any{"name": "Tea Room"})
		f.members("!b:x", "join", "@1:x")
		f.state("!b:x", "m.room.topic", "", map[string]any{"topic": "All about COFFEE"})
		f.members("!c:x", "join", "@1:x", "@2:x")
		f.state("!c:x", "m.room.create", "", map[string]any{"room_version": "12", "type": "m.space"})
		f.state("!c:x", "m.room.canonical_alias", "", map[string]any{"alias": "#Cocoa:x"})
		f.members("!d:x", "join", "@1:x", "@2:x", "@3:x", "@4:x", "@5:x")
		f.state("!d:x", "m.room.name", "", map[string]any{"name": "Secret tea"})
		f.members("!e:x", "join", "@1:x", "@2:x")
		f.state("!e:x", "m.room.name", "", map[string]any{"name": "50% off"})

		list := func(q storage.PublicRoomsQuery) (string, bool) {
			t.Helper()
			rooms, more, err := db.PublicRooms(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			return roomIDs(rooms), more
		}
		if got, more := list(storage.PublicRoomsQuery{Limit: 10}); got != "!a:x=3 !c:x=2 !e:x=2 !b:x=1" || more {
			t.Fatalf("directory = %q (more %v)", got, more)
		}
		if n, err := db.CountPublicRooms(ctx, storage.PublicRoomsQuery{}); err != nil || n != 4 {
			t.Fatalf("count = %d, %v", n, err)
		}

		// Pages forwards and back again.
		if got, more := list(storage.PublicRoomsQuery{Limit: 2}); got != "!a:x=3 !c:x=2" || !more {
			t.Fatalf("page 1 = %q (more %v)", got, more)
		}
		after := &storage.PublicRoomKey{JoinedMembers: 2, RoomID: "!c:x"}
		if got, more := list(storage.PublicRoomsQuery{Limit: 2, After: after}); got != "!e:x=2 !b:x=1" || more {
			t.Fatalf("page 2 = %q (more %v)", got, more)
		}
		before := &storage.PublicRoomKey{JoinedMembers: 2, RoomID: "!e:x"}
		if got, more := list(storage.PublicRoomsQuery{Limit: 2, Before: before}); got != "!a:x=3 !c:x=2" || more {
			t.Fatalf("back from !e = %q (more %v)", got, more)
		}
		if got, more := list(storage.PublicRoomsQuery{Limit: 1, Before: before}); got != "!c:x=2" || !more {
			t.Fatalf("back from !e by one = %q (more %v)", got, more)
		}

		// Search: name, topic and canonical alias, case-insensitively;
		// never private rooms, never former names; LIKE wildcards are
		// literal.
		for term, want := range map[string]string{
			"tea": "!a:x=3", "coffee": "!b:x=1", "COCOA": "!c:x=2", "old": "", "secret": "", "0%": "!e:x=2", "_": "", "%": "!e:x=2",
		} {
			q := storage.PublicRoomsQuery{Limit: 10, SearchTerm: term}
			if got, _ := list(q); got != want {
				t.Errorf("search %q = %q, want %q", term, got, want)
			}
			n, err := db.CountPublicRooms(ctx, q)
			if err != nil || n != len(strings.Fields(want)) {
				t.Errorf("count for %q = %d, %v", term, n, err)
			}
		}
		for _, tc := range []struct {
			types []*string
			want  string
		}{
			{[]*string{ptr("m.space")}, "!c:x=2"},
			{[]*string{nil}, "!a:x=3 !e:x=2 !b:x=1"},
			{[]*string{nil, ptr("m.space")}, "!a:x=3 !c:x=2 !e:x=2 !b:x=1"},
			{[]*string{ptr("org.example.nothing")}, ""},
		} {
			if got, _ := list(storage.PublicRoomsQuery{Limit: 10, RoomTypes: tc.types}); got != tc.want {
				t.Errorf("room types %v = %q, want %q", tc.types, got, tc.want)
			}
		}
		if got, _ := list(storage.PublicRoomsQuery{Limit: 10, RoomTypes: []*string{nil}, SearchTerm: "o"}); got != "!a:x=3 !e:x=2 !b:x=1" {
			t.Errorf("room types and search = %q", got)
		}

		state, err := db.DirectoryState(ctx, []id.RoomID{"!a:x", "!c:x"})
		if err != nil {
			t.Fatal(err)
		}
		if name := gjson.GetBytes(state["!a:x"]["m.room.name"], "content.name").Str; name != "Tea Room" {
			t.Errorf("!a name = %q", name)
		}
		if typ := gjson.GetBytes(state["!c:x"]["m.room.create"], "content.type").Str; typ != "m.space" {
			t.Errorf("!c type = %q", typ)
		}
		if _, ok := state["!a:x"]["m.room.member"]; ok || len(state) != 2 {
			t.Errorf("directory state holds %d rooms / member events: %v", len(state), state)
		}

		// Unpublishing takes a room out.
		if err := db.SetRoomPublic(ctx, "!a:x", false); err != nil {
			t.Fatal(err)
		}
		if got, _ := list(storage.PublicRoomsQuery{Limit: 10}); got != "!c:x=2 !e:x=2 !b:x=1" {
			t.Fatalf("after unpublishing !a = %q", got)
		}
	})
}

func TestUserDirectorySearch(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		f := &roomFixture{t: t, db: db}
		for _, u := range []id.UserID{"@alice:x", "@bob:x", "@carol:x", "@dave:x", "@erin:x", "@frank:x", "@greg:x"} {
			if err := db.CreateUser(ctx, &storage.User{UserID: u}); err != nil {
				t.Fatal(err)
			}
		}
		setProfile := func(u id.UserID, field, value string) {
			v, _ := json.Marshal(value)
			if err := db.SetProfileField(ctx, u, field, v); err != nil {
				t.Fatal(err)
			}
		}
		setProfile("@bob:x", "displayname", "Bobby Tables")
		setProfile("@bob:x", "avatar_url", "mxc://x/bob")
		setProfile("@carol:x", "displayname", "Caroline 100%")
		setProfile("@frank:x", "displayname", "Frank")

		// private: alice, bob, frank joined; greg only invited.
		f.room("!private:x", false)
		f.state("!private:x", "m.room.join_rules", "", map[string]any{"join_rule": "invite"})
		f.members("!private:x", "join", "@alice:x", "@bob:x", "@frank:x")
		f.members("!private:x", "invite", "@greg:x")
		// open: a public join rule; alice is not in it.
		f.room("!open:x", false)
		f.state("!open:x", "m.room.join_rules", "", map[string]any{"join_rule": "public"})
		f.members("!open:x", "join", "@carol:x", "@rita:remote")
		// readable: invite-only but world-readable history.
		f.room("!readable:x", false)
		f.state("!readable:x", "m.room.join_rules", "", map[string]any{"join_rule": "invite"})
		f.state("!readable:x", "m.room.history_visibility", "", map[string]any{"history_visibility": "world_readable"})
		f.members("!readable:x", "join", "@erin:x")
		// hidden: dave's invite-only room, joined_by nobody alice knows.
		f.room("!hidden:x", true)
		f.state("!hidden:x", "m.room.join_rules", "", map[string]any{"join_rule": "invite"})
		f.state("!hidden:x", "m.room.history_visibility", "", map[string]any{"history_visibility": "shared"})
		f.members("!hidden:x", "join", "@dave:x")
		if err := db.DeactivateUser(ctx, "@frank:x", false); err != nil {
			t.Fatal(err)
		}

		search := func(requester id.UserID, term string, limit int) (string, bool) {
			t.Helper()
			found, limited, err := db.SearchUserDirectory(ctx, requester, term, limit)
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, e := range found {
				s := string(e.UserID)
				if e.DisplayName != "" {
					s += "(" + e.DisplayName + ")"
				}
				if e.AvatarURL != "" {
					s += "[" + e.AvatarURL + "]"
				}
				parts = append(parts, s)
			}
			return strings.Join(parts, " "), limited
		}
		// Room-mates first, then by profile completeness, then user ID.
		if got, limited := search("@alice:x", "", 10); got != "@bob:x(Bobby Tables)[mxc://x/bob] @alice:x @carol:x(Caroline 100%) @erin:x @rita:remote" || limited {
			t.Fatalf("everyone visible to alice = %q (limited %v)", got, limited)
		}
		if got, limited := search("@alice:x", "", 2); got != "@bob:x(Bobby Tables)[mxc://x/bob] @alice:x" || !limited {
			t.Fatalf("limit 2 = %q (limited %v)", got, limited)
		}
		for term, want := range map[string]string{
			"bobby":         "@bob:x(Bobby Tables)[mxc://x/bob]",
			"TABLES":        "@bob:x(Bobby Tables)[mxc://x/bob]",
			"car":           "@carol:x(Caroline 100%)",
			"@carol:x":      "@carol:x(Caroline 100%)",
			"rita":          "@rita:remote",
			"remote":        "@rita:remote",
			"erin":          "@erin:x",
			"dave":          "", // shares no room, and the room is not public
			"frank":         "", // deactivated
			"greg":          "", // only invited
			"0%":            "@carol:x(Caroline 100%)",
			"%":             "@carol:x(Caroline 100%)",
			"_":             "",
			"nobody-at-all": "",
		} {
			if got, _ := search("@alice:x", term, 10); got != want {
				t.Errorf("alice searching %q = %q, want %q", term, got, want)
			}
		}
		// A prefix match ranks above a match inside the name.
		setProfile("@erin:x", "displayname", "Erin Carlsen")
		if got, _ := search("@dave:x", "car", 10); got != "@carol:x(Caroline 100%) @erin:x(Erin Carlsen)" {
			t.Errorf("dave searching car = %q", got)
		}
		// Dave sees himself and the open rooms, not alice's private room.
		if got, _ := search("@dave:x", "", 10); got != "@dave:x @carol:x(Caroline 100%) @erin:x(Erin Carlsen) @rita:remote" {
			t.Errorf("everyone visible to dave = %q", got)
		}
	})
}
