package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// spaceTree is the tree the hierarchy tests walk. Bob owns every room;
// alice is joined to the top space only.
//
//	Space (public space, alias, avatar)
//	├── Rules          public, order "a" (its child event sent after Subspace's)
//	├── Subspace       public space, order "b", suggested
//	│   ├── Suggested  public, suggested
//	│   ├── Other      public
//	│   └── Space      (a loop back to the top)
//	├── Members only   restricted to members of Space          ┐
//	├── World readable invite-only but world-readable, encrypted │ no valid order:
//	├── Private        invite-only: alice may not see it        │ by the child
//	├── Invited        invite-only, alice is invited; order of  │ event's
//	│                  51 characters, which is no order         ┘ timestamp
//	└── Removed        public; its child event lost its via
type spaceTree struct {
	srv                                                           *hstest.Server
	alice, bob, carol                                             *mautrix.Client
	space, rules, subspace, suggested, other                      id.RoomID
	membersOnly, worldReadable, private, invited, removed, secret id.RoomID
	names                                                         map[id.RoomID]string
}

func newSpaceTree(t *testing.T, uri string) *spaceTree {
	t.Helper()
	srv := hstest.Start(t, uri, nil)
	tr := &spaceTree{srv: srv, alice: srv.NewUser("alice"), bob: srv.NewUser("bob"), carol: srv.NewUser("carol"), names: map[id.RoomID]string{}}
	spaceType := map[string]any{"type": event.RoomTypeSpace}
	create := func(name string, req mautrix.ReqCreateRoom) id.RoomID {
		req.Name = name
		roomID := mustCreate(t, tr.bob, &req)
		tr.names[roomID] = name
		return roomID
	}
	tr.space = create("Space", mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: spaceType, Topic: "All of it",
		RoomAliasName: "space", InitialState: []*event.Event{
			{Type: event.StateRoomAvatar, Content: event.Content{Raw: map[string]any{"url": "mxc://localhost/space"}}},
		}})
	tr.rules = create("Rules", mautrix.ReqCreateRoom{Preset: "public_chat"})
	tr.subspace = create("Subspace", mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: spaceType})
	tr.suggested = create("Suggested", mautrix.ReqCreateRoom{Preset: "public_chat"})
	tr.other = create("Other", mautrix.ReqCreateRoom{Preset: "public_chat"})
	tr.membersOnly = create("Members only", mautrix.ReqCreateRoom{InitialState: []*event.Event{{
		Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []map[string]any{{"type": "m.room_membership", "room_id": tr.space}},
		}},
	}}})
	tr.worldReadable = create("World readable", mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{
		{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "world_readable"}}},
		{Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}},
	}})
	tr.private = create("Private", mautrix.ReqCreateRoom{Preset: "private_chat"})
	tr.invited = create("Invited", mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{tr.alice.UserID}})
	tr.removed = create("Removed", mautrix.ReqCreateRoom{Preset: "public_chat"})
	tr.secret = create("Secret space", mautrix.ReqCreateRoom{Preset: "private_chat", CreationContent: spaceType})

	via := []string{srv.Config.ServerName}
	// Children are sent a few milliseconds apart so that their timestamps
	// order them.
	child := func(parent, child id.RoomID, content map[string]any) {
		t.Helper()
		time.Sleep(3 * time.Millisecond)
		if _, err := tr.bob.SendStateEvent(ctx, parent, event.StateSpaceChild, string(child), content); err != nil {
			t.Fatalf("add %s to %s: %v", tr.names[child], tr.names[parent], err)
		}
	}
	child(tr.space, tr.subspace, map[string]any{"via": via, "order": "b", "suggested": true})
	child(tr.space, tr.rules, map[string]any{"via": via, "order": "a"})
	child(tr.space, tr.removed, map[string]any{"via": via})
	child(tr.space, tr.membersOnly, map[string]any{"via": via})
	child(tr.space, tr.worldReadable, map[string]any{"via": via, "order": ""})
	child(tr.space, tr.private, map[string]any{"via": via, "order": "caf\u00e9"})
	child(tr.space, tr.invited, map[string]any{"via": via, "order": strings.Repeat("0", 51)})
	child(tr.space, tr.removed, map[string]any{})
	child(tr.subspace, tr.suggested, map[string]any{"via": via, "suggested": true})
	child(tr.subspace, tr.other, map[string]any{"via": via, "suggested": false})
	child(tr.subspace, tr.space, map[string]any{"via": via})
	child(tr.secret, tr.rules, map[string]any{"via": via})
	mustJoin(t, tr.alice, tr.space)
	return tr
}

// hierarchy fetches one page through mautrix's client.
func (tr *spaceTree) hierarchy(t *testing.T, cli *mautrix.Client, root id.RoomID, req *mautrix.ReqHierarchy) *mautrix.RespHierarchy {
	t.Helper()
	resp, err := cli.Hierarchy(ctx, root, req)
	if err != nil {
		t.Fatalf("hierarchy of %s: %v", tr.names[root], err)
	}
	return resp
}

// walk pages through the whole hierarchy and returns the room names in
// the order served.
func (tr *spaceTree) walk(t *testing.T, cli *mautrix.Client, root id.RoomID, req mautrix.ReqHierarchy) []string {
	t.Helper()
	var names []string
	for page := 0; ; page++ {
		if page > 20 {
			t.Fatalf("still paginating after %d pages: %v", page, names)
		}
		resp := tr.hierarchy(t, cli, root, &req)
		if len(resp.Rooms) == 0 && resp.NextBatch != "" {
			t.Fatalf("empty page with next_batch after %v", names)
		}
		names = append(names, tr.roomNames(resp)...)
		if resp.NextBatch == "" {
			return names
		}
		req.From = resp.NextBatch
	}
}

// roomNames names a page's rooms in the order served.
func (tr *spaceTree) roomNames(resp *mautrix.RespHierarchy) []string {
	names := []string{}
	for _, r := range resp.Rooms {
		names = append(names, tr.names[r.RoomID])
	}
	return names
}

// childKeys names the children a room's children_state lists, in order.
func (tr *spaceTree) childKeys(r *mautrix.ChildRoomsChunk) []string {
	names := []string{}
	for _, e := range r.ChildrenState {
		names = append(names, tr.names[id.RoomID(*e.StateKey)])
	}
	return names
}

func findRoom(t *testing.T, resp *mautrix.RespHierarchy, roomID id.RoomID) *mautrix.ChildRoomsChunk {
	t.Helper()
	for _, r := range resp.Rooms {
		if r.RoomID == roomID {
			return r
		}
	}
	t.Fatalf("room %s not in the hierarchy", roomID)
	return nil
}

func checkNames(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func TestHierarchy(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		tr := newSpaceTree(t, uri)
		everything := []string{"Space", "Rules", "Subspace", "Suggested", "Other", "Members only", "World readable", "Invited"}

		t.Run("whole tree", func(t *testing.T) {
			resp := tr.hierarchy(t, tr.alice, tr.space, nil)
			names := tr.roomNames(resp)
			// Depth first, each room once (the loop back to Space is not
			// followed), Private left out, Removed no longer a child.
			checkNames(t, "rooms", names, everything...)
			if resp.NextBatch != "" {
				t.Errorf("next_batch %q on the only page", resp.NextBatch)
			}

			space := findRoom(t, resp, tr.space)
			// Ordered by valid order, then timestamp; invalid orders ("",
			// non-ASCII, too long) count as none.
			checkNames(t, "Space's children_state", tr.childKeys(space),
				"Rules", "Subspace", "Members only", "World readable", "Private", "Invited")
			if space.Name != "Space" || space.Topic != "All of it" || space.RoomType != event.RoomTypeSpace ||
				space.CanonicalAlias != id.RoomAlias("#space:"+tr.srv.Config.ServerName) || space.AvatarURL != "mxc://localhost/space" ||
				space.JoinRule != event.JoinRulePublic || space.WorldReadable || space.GuestCanJoin || space.NumJoinedMembers != 2 ||
				space.RoomVersion == "" || space.Encryption != "" {
				t.Errorf("Space's summary: %+v", space.PublicRoomInfo)
			}
			rulesChild := space.ChildrenState[0]
			if rulesChild.Type != event.StateSpaceChild || rulesChild.Sender != tr.bob.UserID || rulesChild.Timestamp <= 0 ||
				rulesChild.Content.Raw["order"] != "a" || !reflect.DeepEqual(rulesChild.Content.Raw["via"], []any{tr.srv.Config.ServerName}) {
				t.Errorf("Rules' child event: %+v (content %v)", rulesChild, rulesChild.Content.Raw)
			}
			checkNames(t, "Subspace's children_state", tr.childKeys(findRoom(t, resp, tr.subspace)), "Suggested", "Other", "Space")
			if rules := findRoom(t, resp, tr.rules); len(rules.ChildrenState) != 0 || rules.RoomType != "" || rules.NumJoinedMembers != 1 {
				t.Errorf("Rules: %+v, children %v", rules.PublicRoomInfo, rules.ChildrenState)
			}
			if wr := findRoom(t, resp, tr.worldReadable); !wr.WorldReadable || wr.JoinRule != event.JoinRuleInvite || wr.Encryption != id.AlgorithmMegolmV1 {
				t.Errorf("World readable: %+v", wr.PublicRoomInfo)
			}
			if mo := findRoom(t, resp, tr.membersOnly); mo.JoinRule != event.JoinRuleRestricted || !reflect.DeepEqual(mo.AllowedRoomIDs, []id.RoomID{tr.space}) {
				t.Errorf("Members only: %+v", mo.PublicRoomInfo)
			}
		})

		t.Run("raw JSON has the required fields", func(t *testing.T) {
			var raw struct {
				Rooms []map[string]json.RawMessage `json:"rooms"`
			}
			_, err := tr.alice.MakeRequest(ctx, http.MethodGet, tr.alice.BuildClientURL("v1", "rooms", tr.space, "hierarchy"), nil, &raw)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range raw.Rooms {
				for _, field := range []string{"room_id", "num_joined_members", "world_readable", "guest_can_join"} {
					if _, ok := r[field]; !ok {
						t.Errorf("room %s has no %s", r["room_id"], field)
					}
				}
				if cs := string(r["children_state"]); !strings.HasPrefix(cs, "[") {
					t.Errorf("room %s: children_state is %s, not an array", r["room_id"], cs)
				}
			}
		})

		t.Run("from a subspace the loop leads back up", func(t *testing.T) {
			checkNames(t, "rooms", tr.walk(t, tr.alice, tr.subspace, mautrix.ReqHierarchy{}),
				"Subspace", "Suggested", "Other", "Space", "Rules", "Members only", "World readable", "Invited")
		})

		t.Run("what another user sees", func(t *testing.T) {
			// carol is in no room: not invited to Invited, not a member of
			// the space that Members only admits.
			checkNames(t, "rooms", tr.walk(t, tr.carol, tr.space, mautrix.ReqHierarchy{}),
				"Space", "Rules", "Subspace", "Suggested", "Other", "World readable")
		})

		t.Run("suggested_only", func(t *testing.T) {
			resp := tr.hierarchy(t, tr.alice, tr.space, &mautrix.ReqHierarchy{SuggestedOnly: true})
			names := tr.roomNames(resp)
			checkNames(t, "rooms", names, "Space", "Subspace", "Suggested")
			checkNames(t, "Space's children_state", tr.childKeys(findRoom(t, resp, tr.space)), "Subspace")
		})

		t.Run("max_depth", func(t *testing.T) {
			zero, one := 0, 1
			checkNames(t, "max_depth=0", tr.walk(t, tr.alice, tr.space, mautrix.ReqHierarchy{MaxDepth: &zero}), "Space")
			resp := tr.hierarchy(t, tr.alice, tr.space, &mautrix.ReqHierarchy{MaxDepth: &zero})
			if got := len(resp.Rooms[0].ChildrenState); got != 6 {
				t.Errorf("max_depth=0: Space lists %d children, want its 6", got)
			}
			checkNames(t, "max_depth=1", tr.walk(t, tr.alice, tr.space, mautrix.ReqHierarchy{MaxDepth: &one}),
				"Space", "Rules", "Subspace", "Members only", "World readable", "Invited")
		})

		t.Run("pagination", func(t *testing.T) {
			for _, limit := range []int{1, 2, 3, 7, 8, 9} {
				checkNames(t, fmt.Sprintf("limit %d", limit), tr.walk(t, tr.alice, tr.space, mautrix.ReqHierarchy{Limit: limit}), everything...)
			}
			one := 1
			checkNames(t, "limit 2, max_depth 1", tr.walk(t, tr.alice, tr.space, mautrix.ReqHierarchy{Limit: 2, MaxDepth: &one}),
				"Space", "Rules", "Subspace", "Members only", "World readable", "Invited")
			checkNames(t, "limit 1, suggested_only", tr.walk(t, tr.alice, tr.space, mautrix.ReqHierarchy{Limit: 1, SuggestedOnly: true}),
				"Space", "Subspace", "Suggested")

			first := tr.hierarchy(t, tr.alice, tr.space, &mautrix.ReqHierarchy{Limit: 3})
			if first.NextBatch == "" || len(first.Rooms) != 3 {
				t.Fatalf("first page of 3: %d rooms, next_batch %q", len(first.Rooms), first.NextBatch)
			}
			// limit may change between pages; the rest may not.
			second := tr.hierarchy(t, tr.alice, tr.space, &mautrix.ReqHierarchy{From: first.NextBatch, Limit: 100})
			checkNames(t, "after a page of 3", tr.roomNames(second), everything[3:]...)
			zero := 0
			for what, try := range map[string]func() error{
				"max_depth changed": func() error {
					_, err := tr.alice.Hierarchy(ctx, tr.space, &mautrix.ReqHierarchy{From: first.NextBatch, MaxDepth: &zero})
					return err
				},
				"suggested_only changed": func() error {
					_, err := tr.alice.Hierarchy(ctx, tr.space, &mautrix.ReqHierarchy{From: first.NextBatch, SuggestedOnly: true})
					return err
				},
				"another room": func() error {
					_, err := tr.alice.Hierarchy(ctx, tr.subspace, &mautrix.ReqHierarchy{From: first.NextBatch})
					return err
				},
				"another user": func() error {
					_, err := tr.carol.Hierarchy(ctx, tr.space, &mautrix.ReqHierarchy{From: first.NextBatch})
					return err
				},
			} {
				t.Run("token replayed with "+what, func(t *testing.T) { mustErr(t, try(), mautrix.MInvalidParam, http.StatusBadRequest) })
			}
		})

		t.Run("errors", func(t *testing.T) {
			// The spec answers 403 for a room the user may not see and for
			// one that does not exist alike.
			for what, roomID := range map[string]id.RoomID{
				"private space":           tr.secret,
				"invite-only room":        tr.private,
				"unknown room":            "!unknown:" + id.RoomID(tr.srv.Config.ServerName),
				"unknown room, v12 style": "!bm90IGEgcmVhbCByb29tIGF0IGFsbCBqdXN0IGEgdGVzdA",
			} {
				t.Run(what, func(t *testing.T) {
					_, err := tr.alice.Hierarchy(ctx, roomID, nil)
					mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
				})
			}
			_, err := tr.alice.Hierarchy(ctx, "not-a-room-id", nil)
			mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
			bad := []map[string]string{
				{"limit": "0"}, {"limit": "-1"}, {"limit": "ten"}, {"limit": "1.5"}, {"limit": "99999999999999999999999"},
				{"max_depth": "-1"}, {"max_depth": "deep"}, {"max_depth": ""}, {"max_depth": "99999999999999999999999"},
				{"suggested_only": "yes"}, {"suggested_only": "1"},
				{"from": "garbage"}, {"from": "eyJiIjoieCIsImwiOiIhYSIsIm4iOjF9"} /* well-formed, bound to nothing */, {"from": strings.Repeat("A", 5000)},
			}
			for _, query := range bad {
				t.Run(fmt.Sprint(query), func(t *testing.T) {
					url := tr.alice.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "rooms", tr.space, "hierarchy"}, query)
					_, err := tr.alice.MakeRequest(ctx, http.MethodGet, url, nil, nil)
					mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
				})
			}
			// A limit above the cap is capped, not refused.
			resp := tr.hierarchy(t, tr.alice, tr.space, &mautrix.ReqHierarchy{Limit: 100000})
			if len(resp.Rooms) != len(everything) {
				t.Errorf("limit 100000: %d rooms", len(resp.Rooms))
			}
		})

		t.Run("pagination while the tree changes", func(t *testing.T) {
			first := tr.hierarchy(t, tr.alice, tr.subspace, &mautrix.ReqHierarchy{Limit: 2})
			names := tr.roomNames(first)
			checkNames(t, "first page", names, "Subspace", "Suggested")
			// A room added before the end of the page served does not shift
			// the next pages: they resume after the last room served. (This
			// subtest runs last: it changes the tree.)
			added := mustCreate(t, tr.bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Added"})
			tr.names[added] = "Added"
			via := []string{tr.srv.Config.ServerName}
			if _, err := tr.bob.SendStateEvent(ctx, tr.subspace, event.StateSpaceChild, string(added), map[string]any{"via": via, "order": " "}); err != nil {
				t.Fatal(err)
			}
			names = append(names, tr.walk(t, tr.alice, tr.subspace, mautrix.ReqHierarchy{Limit: 2, From: first.NextBatch})...)
			checkNames(t, "rooms", names, "Subspace", "Suggested", "Other", "Space", "Rules", "Members only", "World readable", "Invited")
			checkNames(t, "a new walk", tr.walk(t, tr.alice, tr.subspace, mautrix.ReqHierarchy{}),
				"Subspace", "Added", "Suggested", "Other", "Space", "Rules", "Members only", "World readable", "Invited")
		})
	})
}

// TestHierarchyRateLimit: hierarchy requests are limited per user
// (rate_limits.hierarchy), each walking the tree.
func TestHierarchyRateLimit(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), func(c *config.Config) {
		c.RateLimits.Hierarchy = config.RateLimit{PerSecond: 0.1, Burst: 3}
	})
	alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
	alice.DefaultHTTPRetries = 0
	space := mustCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: map[string]any{"type": event.RoomTypeSpace}})
	var limited error
	for i := 0; i < 10 && limited == nil; i++ {
		_, limited = alice.Hierarchy(ctx, space, &mautrix.ReqHierarchy{})
	}
	rlCheckLimited(t, limited, 20*time.Second)
	if _, err := bob.Hierarchy(ctx, space, &mautrix.ReqHierarchy{}); err != nil {
		t.Fatalf("bob's request while alice is limited: %v", err)
	}
}
