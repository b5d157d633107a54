package clientapi_test

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// mautrix has no call for POST /publicRooms or the directory visibility
// endpoints, so these go through MakeRequest.

func searchPublicRooms(cli *mautrix.Client, query map[string]string, body map[string]any) (*mautrix.RespPublicRooms, error) {
	var resp mautrix.RespPublicRooms
	_, err := cli.MakeRequest(ctx, http.MethodPost, cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "publicRooms"}, query), body, &resp)
	return &resp, err
}

func roomVisibility(cli *mautrix.Client, roomID id.RoomID) (string, error) {
	var resp struct {
		Visibility string `json:"visibility"`
	}
	_, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildClientURL("v3", "directory", "list", "room", roomID), nil, &resp)
	return resp.Visibility, err
}

func setRoomVisibility(cli *mautrix.Client, roomID id.RoomID, body map[string]any) error {
	_, err := cli.MakeRequest(ctx, http.MethodPut, cli.BuildClientURL("v3", "directory", "list", "room", roomID), body, nil)
	return err
}

// listed renders a directory page as "name=members" entries.
func listed(resp *mautrix.RespPublicRooms) string {
	var parts []string
	for _, r := range resp.Chunk {
		parts = append(parts, fmt.Sprintf("%s=%d", r.Name, r.NumJoinedMembers))
	}
	return strings.Join(parts, " ")
}

func mustCreate(t *testing.T, cli *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := cli.CreateRoom(ctx, req)
	if err != nil {
		t.Fatalf("create room %q: %v", req.Name, err)
	}
	return resp.RoomID
}

func mustJoin(t *testing.T, cli *mautrix.Client, roomID id.RoomID) {
	t.Helper()
	if _, err := cli.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("%s joins %s: %v", cli.UserID, roomID, err)
	}
}

func TestPublicRoomsDirectory(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		tea := mustCreate(t, alice, &mautrix.ReqCreateRoom{Visibility: "public", Name: "Tea House", Topic: "Leaves and kettles", RoomAliasName: "tea"})
		mustJoin(t, bob, tea)
		mustJoin(t, carol, tea)
		space := mustCreate(t, carol, &mautrix.ReqCreateRoom{Visibility: "public", Name: "Coffee Corner",
			CreationContent: map[string]any{"type": "m.space"},
			InitialState: []*event.Event{
				{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "world_readable"}}},
				{Type: event.StateGuestAccess, Content: event.Content{Raw: map[string]any{"guest_access": "can_join"}}},
				{Type: event.StateRoomAvatar, Content: event.Content{Raw: map[string]any{"url": "mxc://localhost/beans"}}},
			}})
		// Private rooms stay out, whatever their join rule.
		mustCreate(t, alice, &mautrix.ReqCreateRoom{Name: "Secret tea"})
		mustCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Unlisted tea"})

		// Anyone may read the directory, without an access token.
		resp, err := srv.Client().PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil {
			t.Fatalf("public rooms without a token: %v", err)
		}
		if got := listed(resp); got != "Tea House=3 Coffee Corner=1" || resp.TotalRoomCountEstimate != 2 || resp.NextBatch != "" || resp.PrevBatch != "" {
			t.Fatalf("directory = %q, total %d, next %q, prev %q", got, resp.TotalRoomCountEstimate, resp.NextBatch, resp.PrevBatch)
		}
		want := mautrix.PublicRoomInfo{RoomID: tea, Name: "Tea House", Topic: "Leaves and kettles", CanonicalAlias: "#tea:localhost",
			NumJoinedMembers: 3, JoinRule: event.JoinRulePublic}
		if got := *resp.Chunk[0]; !reflect.DeepEqual(got, want) {
			t.Errorf("tea entry = %+v\nwant %+v", got, want)
		}
		want = mautrix.PublicRoomInfo{RoomID: space, Name: "Coffee Corner", NumJoinedMembers: 1, JoinRule: event.JoinRulePublic,
			WorldReadable: true, GuestCanJoin: true, AvatarURL: "mxc://localhost/beans", RoomType: event.RoomTypeSpace}
		if got := *resp.Chunk[1]; !reflect.DeepEqual(got, want) {
			t.Errorf("space entry = %+v\nwant %+v", got, want)
		}

		// Counts follow membership; names follow the current state.
		if _, err := bob.LeaveRoom(ctx, tea); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.SendStateEvent(ctx, space, event.StateRoomName, "", &event.RoomNameEventContent{Name: "Cocoa Corner"}); err != nil {
			t.Fatal(err)
		}
		if resp, err = bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: "localhost"}); err != nil || listed(resp) != "Tea House=2 Cocoa Corner=1" {
			t.Fatalf("directory after a leave and a rename = %q, %v", listed(resp), err)
		}

		for _, tc := range []struct {
			filter map[string]any
			want   string
		}{
			{map[string]any{"generic_search_term": "KETTLE"}, "Tea House=2"},     // topic
			{map[string]any{"generic_search_term": "#tea:local"}, "Tea House=2"}, // canonical alias
			{map[string]any{"generic_search_term": " cocoa "}, "Cocoa Corner=1"}, // name
			{map[string]any{"generic_search_term": "coffee"}, ""},                // former name
			{map[string]any{"generic_search_term": "secret"}, ""},                // private room
			{map[string]any{"generic_search_term": "unlisted"}, ""},              // public join rule, not published
			{map[string]any{"room_types": []any{"m.space"}}, "Cocoa Corner=1"},   // spaces only
			{map[string]any{"room_types": []any{nil}}, "Tea House=2"},            // rooms without a type
			{map[string]any{"room_types": []any{nil, "m.space"}}, "Tea House=2 Cocoa Corner=1"},
			{map[string]any{"generic_search_term": "corner", "room_types": []any{nil}}, ""},
			{map[string]any{}, "Tea House=2 Cocoa Corner=1"},
		} {
			resp, err := searchPublicRooms(bob, nil, map[string]any{"filter": tc.filter, "include_all_networks": false})
			if err != nil {
				t.Fatalf("search %v: %v", tc.filter, err)
			}
			if got := listed(resp); got != tc.want || resp.TotalRoomCountEstimate != strings.Count(tc.want, "=") {
				t.Errorf("search %v = %q (total %d), want %q", tc.filter, got, resp.TotalRoomCountEstimate, tc.want)
			}
		}

		// POST needs a token; bad input gets the spec's errors.
		_, err = searchPublicRooms(srv.Client(), nil, map[string]any{})
		mustErr(t, err, mautrix.MMissingToken, http.StatusUnauthorized)
		_, err = searchPublicRooms(bob, nil, map[string]any{"since": "not-a-token"})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		_, err = searchPublicRooms(bob, nil, map[string]any{"limit": -1})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		_, err = searchPublicRooms(bob, nil, map[string]any{"filter": map[string]any{"room_types": "m.space"}})
		mustErr(t, err, mautrix.MBadJSON, http.StatusBadRequest)
		_, err = searchPublicRooms(bob, map[string]string{"server": "elsewhere.example"}, map[string]any{})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		_, err = srv.Client().PublicRooms(ctx, &mautrix.ReqPublicRooms{Since: "bm90LWEtdG9rZW4"})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
	})
}

func TestPublicRoomsPagination(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		const rooms = 25
		for i := range rooms {
			roomID := mustCreate(t, alice, &mautrix.ReqCreateRoom{Visibility: "public", Name: fmt.Sprintf("room %02d", i)})
			if i%3 == 0 {
				mustJoin(t, bob, roomID)
			}
		}
		page := func(since string) *mautrix.RespPublicRooms {
			t.Helper()
			resp, err := searchPublicRooms(bob, nil, map[string]any{"limit": 10, "since": since})
			if err != nil {
				t.Fatalf("page since %q: %v", since, err)
			}
			if resp.TotalRoomCountEstimate != rooms {
				t.Fatalf("total_room_count_estimate = %d", resp.TotalRoomCountEstimate)
			}
			return resp
		}
		p1 := page("")
		p2 := page(p1.NextBatch)
		p3 := page(p2.NextBatch)
		if len(p1.Chunk) != 10 || len(p2.Chunk) != 10 || len(p3.Chunk) != 5 {
			t.Fatalf("page sizes %d %d %d", len(p1.Chunk), len(p2.Chunk), len(p3.Chunk))
		}
		if p1.PrevBatch != "" || p1.NextBatch == "" || p2.PrevBatch == "" || p2.NextBatch == "" || p3.PrevBatch == "" || p3.NextBatch != "" {
			t.Fatalf("tokens: p1 %q/%q p2 %q/%q p3 %q/%q", p1.PrevBatch, p1.NextBatch, p2.PrevBatch, p2.NextBatch, p3.PrevBatch, p3.NextBatch)
		}
		// Every room once, the ones bob joined (two members) first.
		all := append(append(slices.Clone(p1.Chunk), p2.Chunk...), p3.Chunk...)
		seen := map[id.RoomID]bool{}
		for i, r := range all {
			if seen[r.RoomID] {
				t.Fatalf("room %s (%s) listed twice", r.RoomID, r.Name)
			}
			seen[r.RoomID] = true
			if wantMembers := 1 + boolInt(i < 9); r.NumJoinedMembers != wantMembers {
				t.Fatalf("entry %d (%s) has %d members, want %d", i, r.Name, r.NumJoinedMembers, wantMembers)
			}
		}
		// Back from page 3 gives page 2 again, and from there page 1.
		back2 := page(p3.PrevBatch)
		if listed(back2) != listed(p2) || back2.PrevBatch == "" || back2.NextBatch == "" {
			t.Fatalf("back from page 3 = %q (prev %q, next %q), want %q", listed(back2), back2.PrevBatch, back2.NextBatch, listed(p2))
		}
		back1 := page(back2.PrevBatch)
		if listed(back1) != listed(p1) || back1.PrevBatch != "" || back1.NextBatch == "" {
			t.Fatalf("back from page 2 = %q (prev %q), want %q", listed(back1), back1.PrevBatch, listed(p1))
		}
		if again := page(back1.NextBatch); listed(again) != listed(p2) {
			t.Fatalf("forward again = %q, want %q", listed(again), listed(p2))
		}
		// GET pages the same way.
		get, err := srv.Client().PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 10, Since: p1.NextBatch})
		if err != nil || listed(get) != listed(p2) {
			t.Fatalf("GET page 2 = %q, %v", listed(get), err)
		}
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestRoomDirectoryVisibility(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		srv.CreateUser("admin", pw, true)
		admin := srv.Login("admin", pw)
		roomID := mustCreate(t, alice, &mautrix.ReqCreateRoom{Name: "Book club", Invite: []id.UserID{bob.UserID}})
		mustJoin(t, bob, roomID)

		// Reading the visibility needs no token.
		if v, err := roomVisibility(srv.Client(), roomID); err != nil || v != "private" {
			t.Fatalf("visibility = %q, %v", v, err)
		}
		_, err := roomVisibility(srv.Client(), "!nowhere:localhost")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)

		// Strangers and members without power to set the canonical alias
		// may not publish the room.
		mustErr(t, setRoomVisibility(carol, roomID, map[string]any{"visibility": "public"}), mautrix.MForbidden, http.StatusForbidden)
		mustErr(t, setRoomVisibility(bob, roomID, map[string]any{"visibility": "public"}), mautrix.MForbidden, http.StatusForbidden)
		mustErr(t, setRoomVisibility(srv.Client(), roomID, map[string]any{"visibility": "public"}), mautrix.MMissingToken, http.StatusUnauthorized)
		mustErr(t, setRoomVisibility(alice, roomID, map[string]any{"visibility": "listed"}), mautrix.MInvalidParam, http.StatusBadRequest)
		mustErr(t, setRoomVisibility(alice, "!nowhere:localhost", map[string]any{"visibility": "public"}), mautrix.MNotFound, http.StatusNotFound)
		mustErr(t, setRoomVisibility(admin, "!nowhere:localhost", map[string]any{"visibility": "public"}), mautrix.MNotFound, http.StatusNotFound)
		if v, _ := roomVisibility(alice, roomID); v != "private" {
			t.Fatalf("visibility after refused changes = %q", v)
		}

		// The creator may; visibility defaults to public.
		if err := setRoomVisibility(alice, roomID, map[string]any{}); err != nil {
			t.Fatalf("alice publishes: %v", err)
		}
		if v, _ := roomVisibility(carol, roomID); v != "public" {
			t.Fatalf("visibility = %q", v)
		}
		if resp, err := carol.PublicRooms(ctx, nil); err != nil || listed(resp) != "Book club=2" {
			t.Fatalf("directory = %q, %v", listed(resp), err)
		}

		// Power over m.room.canonical_alias is what counts.
		var pl event.PowerLevelsEventContent
		if err := alice.StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		pl.SetUserLevel(bob.UserID, 50)
		if _, err := alice.SendStateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if err := setRoomVisibility(bob, roomID, map[string]any{"visibility": "private"}); err != nil {
			t.Fatalf("bob with power 50 unpublishes: %v", err)
		}
		if v, _ := roomVisibility(carol, roomID); v != "private" {
			t.Fatalf("visibility = %q", v)
		}

		// A server admin may, without being in the room.
		if err := setRoomVisibility(admin, roomID, map[string]any{"visibility": "public"}); err != nil {
			t.Fatalf("admin publishes: %v", err)
		}
		if resp, err := srv.Client().PublicRooms(ctx, nil); err != nil || listed(resp) != "Book club=2" {
			t.Fatalf("directory = %q, %v", listed(resp), err)
		}
		// A former member has no say any more.
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		mustErr(t, setRoomVisibility(bob, roomID, map[string]any{"visibility": "private"}), mautrix.MForbidden, http.StatusForbidden)
	})
}

func TestUserDirectorySearch(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		dave, erin, frank := srv.NewUser("dave"), srv.NewUser("erin"), srv.NewUser("frank")
		if err := bob.SetDisplayName(ctx, "Bobby Tables"); err != nil {
			t.Fatal(err)
		}
		if err := bob.SetAvatarURL(ctx, id.ContentURI{Homeserver: "localhost", FileID: "bobby"}); err != nil {
			t.Fatal(err)
		}
		if err := carol.SetDisplayName(ctx, "Caroline"); err != nil {
			t.Fatal(err)
		}
		// alice and bob share an invite-only room.
		shared := mustCreate(t, alice, &mautrix.ReqCreateRoom{Invite: []id.UserID{bob.UserID}})
		mustJoin(t, bob, shared)
		// carol and erin are in a room with a public join rule (not
		// published in the room directory: the join rule is what counts).
		open := mustCreate(t, carol, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		mustJoin(t, erin, open)
		// frank's invite-only room has world-readable history.
		mustCreate(t, frank, &mautrix.ReqCreateRoom{InitialState: []*event.Event{
			{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "world_readable"}}},
		}})
		// dave is alone in an invite-only room.
		mustCreate(t, dave, &mautrix.ReqCreateRoom{Name: "Dave's den"})
		// erin is deactivated (still joined: deactivation does not leave rooms).
		if err := srv.HS.Accounts.Deactivate(ctx, erin.UserID, false); err != nil {
			t.Fatal(err)
		}

		search := func(cli *mautrix.Client, term string, limit int) (string, bool) {
			t.Helper()
			resp, err := cli.SearchUserDirectory(ctx, term, limit)
			if err != nil {
				t.Fatalf("search %q: %v", term, err)
			}
			var parts []string
			for _, r := range resp.Results {
				s := string(r.UserID)
				// The spec's key is display_name; mautrix v0.32 reads
				// displayname (the profile API's), so it lands in Extra.
				if r.DisplayName != "" {
					t.Errorf("%s: unexpected displayname key", r.UserID)
				}
				if name, _ := r.Extra["display_name"].(string); name != "" {
					s += "(" + name + ")"
				}
				if !r.AvatarURL.IsEmpty() {
					s += "[" + r.AvatarURL.String() + "]"
				}
				parts = append(parts, s)
			}
			return strings.Join(parts, " "), resp.Limited
		}
		// Registration sets the localpart as the display name.
		for _, tc := range []struct {
			term, want string
		}{
			{"bobby", "@bob:localhost(Bobby Tables)[mxc://localhost/bobby]"}, // display name
			{"TABLES", "@bob:localhost(Bobby Tables)[mxc://localhost/bobby]"},
			{"bob", "@bob:localhost(Bobby Tables)[mxc://localhost/bobby]"}, // localpart
			{"@carol:localhost", "@carol:localhost(Caroline)"},             // whole user ID
			{"caro", "@carol:localhost(Caroline)"},
			{"frank", "@frank:localhost(frank)"}, // world-readable room
			{"dave", ""},                         // shares no room with alice, in no public room
			{"erin", ""},                         // deactivated
			{"", "@bob:localhost(Bobby Tables)[mxc://localhost/bobby] @alice:localhost(alice) @carol:localhost(Caroline) @frank:localhost(frank)"},
		} {
			if got, limited := search(alice, tc.term, 0); got != tc.want || limited {
				t.Errorf("alice searching %q = %q (limited %v), want %q", tc.term, got, limited, tc.want)
			}
		}
		if got, limited := search(alice, "", 2); got != "@bob:localhost(Bobby Tables)[mxc://localhost/bobby] @alice:localhost(alice)" || !limited {
			t.Errorf("limit 2 = %q (limited %v)", got, limited)
		}
		// dave finds the public room's members, not alice's room-mates.
		if got, _ := search(dave, "", 10); got != "@dave:localhost(dave) @carol:localhost(Caroline) @frank:localhost(frank)" {
			t.Errorf("dave's directory = %q", got)
		}

		_, err := srv.Client().SearchUserDirectory(ctx, "bob", 10)
		mustErr(t, err, mautrix.MMissingToken, http.StatusUnauthorized)
		_, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "user_directory", "search"), map[string]any{"limit": 5}, nil)
		mustErr(t, err, mautrix.RespError{ErrCode: "M_MISSING_PARAM"}, http.StatusBadRequest)
		_, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "user_directory", "search"), map[string]any{"search_term": "b", "limit": -1}, nil)
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
	})
}
