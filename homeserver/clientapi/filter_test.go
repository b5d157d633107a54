package clientapi_test

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestFilters(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		getFilter := func(cli *mautrix.Client, owner id.UserID, filterID string) (*mautrix.Filter, error) {
			var f mautrix.Filter
			_, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildClientURL("v3", "user", owner, "filter", filterID), nil, &f)
			return &f, err
		}

		filter := &mautrix.Filter{
			Room: &mautrix.RoomFilter{
				Timeline:  &mautrix.FilterPart{Limit: 10, Types: []event.Type{event.EventMessage}, NotSenders: []id.UserID{"@spam:localhost"}},
				State:     &mautrix.FilterPart{LazyLoadMembers: true},
				NotRooms:  []id.RoomID{"!726s6s6q:localhost"},
				Ephemeral: &mautrix.FilterPart{Types: []event.Type{event.EphemeralEventReceipt}},
			},
			Presence:    &mautrix.FilterPart{NotSenders: []id.UserID{"@alice:localhost"}},
			EventFormat: mautrix.EventFormatClient,
			EventFields: []string{"type", "content", "sender"},
		}
		resp, err := alice.CreateFilter(ctx, filter)
		if err != nil || resp.FilterID == "" || strings.HasPrefix(resp.FilterID, "{") {
			t.Fatalf("create filter = %+v, %v", resp, err)
		}
		got, err := getFilter(alice, alice.UserID, resp.FilterID)
		if err != nil {
			t.Fatalf("get filter: %v", err)
		}
		// event.Type's class is guessed on decoding; compare what was sent.
		if !reflect.DeepEqual(got.EventFields, filter.EventFields) || got.Room.Timeline.Limit != 10 ||
			got.Room.Timeline.Types[0].Type != "m.room.message" || !got.Room.State.LazyLoadMembers ||
			got.Room.NotRooms[0] != "!726s6s6q:localhost" || got.Presence.NotSenders[0] != "@alice:localhost" {
			t.Fatalf("filter read back = %+v", got)
		}
		// The sync code loads it from storage.
		if raw, err := srv.HS.DB.GetFilter(ctx, alice.UserID, resp.FilterID); err != nil || !strings.Contains(string(raw), `"lazy_load_members":true`) {
			t.Fatalf("stored filter = %s, %v", raw, err)
		}
		// Uploading the same filter again gives the same ID; another, a new one.
		again, err := alice.CreateFilter(ctx, filter)
		if err != nil || again.FilterID != resp.FilterID {
			t.Fatalf("same filter again = %+v, %v", again, err)
		}
		other, err := alice.CreateFilter(ctx, &mautrix.Filter{})
		if err != nil || other.FilterID == resp.FilterID {
			t.Fatalf("empty filter = %+v, %v", other, err)
		}

		// Unknown filters, and filters of other users.
		_, err = getFilter(alice, alice.UserID, "nosuchfilter")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = getFilter(bob, bob.UserID, resp.FilterID)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = getFilter(bob, alice.UserID, resp.FilterID)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		_, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildClientURL("v3", "user", alice.UserID, "filter"), map[string]any{}, nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		if _, err := srv.HS.DB.GetFilter(ctx, bob.UserID, resp.FilterID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("storage: bob reads alice's filter: %v", err)
		}

		// Filters that break the spec's schema.
		post := func(body any) error {
			_, err := alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "user", alice.UserID, "filter"), body, nil)
			return err
		}
		for _, bad := range []any{
			map[string]any{"event_format": "xml"},
			map[string]any{"event_fields": "type"},
			map[string]any{"room": []any{}},
			map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": "ten"}}},
			map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 2.5}}},
			map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 0}}},
			map[string]any{"presence": map[string]any{"limit": -1}},
			map[string]any{"room": map[string]any{"rooms": []string{"#alias:localhost"}}},
			map[string]any{"room": map[string]any{"state": map[string]any{"not_rooms": []string{"room"}}}},
			map[string]any{"account_data": map[string]any{"senders": []string{"bob"}}},
			map[string]any{"room": map[string]any{"include_leave": "yes"}},
			[]any{},
		} {
			mustErr(t, post(bad), mautrix.MBadJSON, http.StatusBadRequest)
		}
		// Fields the schema doesn't know are kept (clients use unstable ones).
		var created mautrix.RespCreateFilter
		_, err = alice.MakeRequest(ctx, http.MethodPost, alice.BuildClientURL("v3", "user", alice.UserID, "filter"),
			map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1, "org.example.unstable": true}}}, &created)
		if err != nil {
			t.Fatal(err)
		}
		if raw, err := srv.HS.DB.GetFilter(ctx, alice.UserID, created.FilterID); err != nil || !strings.Contains(string(raw), "org.example.unstable") {
			t.Fatalf("filter with an unstable field = %s, %v", raw, err)
		}
	})
}
