package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

type adminReport struct {
	ID             int64           `json:"id"`
	ReceivedTS     int64           `json:"received_ts"`
	RoomID         id.RoomID       `json:"room_id"`
	Name           *string         `json:"name"`
	CanonicalAlias *string         `json:"canonical_alias"`
	EventID        id.EventID      `json:"event_id"`
	UserID         id.UserID       `json:"user_id"`
	Sender         id.UserID       `json:"sender"`
	TargetUserID   id.UserID       `json:"target_user_id"`
	Reason         *string         `json:"reason"`
	Score          *int            `json:"score"`
	EventJSON      json.RawMessage `json:"event_json"`
}

type adminReportList struct {
	EventReports []adminReport `json:"event_reports"`
	RoomReports  []adminReport `json:"room_reports"`
	UserReports  []adminReport `json:"user_reports"`
	NextToken    *int          `json:"next_token"`
	Total        int           `json:"total"`
}

func listReports(t *testing.T, admin *mautrix.Client, kind string, query map[string]string) *adminReportList {
	t.Helper()
	var resp adminReportList
	u := admin.BuildURLWithQuery(mautrix.SynapseAdminURLPath{"v1", kind + "_reports"}, query)
	if _, err := admin.MakeRequest(ctx, http.MethodGet, u, nil, &resp); err != nil {
		t.Fatalf("list %s reports: %v", kind, err)
	}
	return &resp
}

func reportEventWithScore(cli *mautrix.Client, roomID id.RoomID, eventID id.EventID, body map[string]any) error {
	_, err := cli.MakeRequest(ctx, http.MethodPost, cli.BuildClientURL("v3", "rooms", roomID, "report", eventID), body, nil)
	return err
}

func TestReports(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		srv.CreateUser("admin", pw, true)
		admin := srv.Login("admin", pw)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")

		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Lobby", RoomAliasName: "lobby",
			InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		before := sendText(t, alice, room.RoomID, "said before bob came")
		if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		rude := sendText(t, alice, room.RoomID, "something rude")

		// Bob, joined, reports what he saw, with a pre-v1.18 score.
		if err := reportEventWithScore(bob, room.RoomID, rude, map[string]any{"reason": "rude", "score": -80}); err != nil {
			t.Fatalf("report: %v", err)
		}
		// Without a reason too: it is optional for events.
		if err := bob.ReportEvent(ctx, room.RoomID, rude, ""); err != nil {
			t.Fatalf("report without reason: %v", err)
		}

		// What bob cannot see, or is not joined for, looks missing.
		mustErr(t, bob.ReportEvent(ctx, room.RoomID, before, "from before I came"), mautrix.MNotFound, http.StatusNotFound)
		mustErr(t, bob.ReportEvent(ctx, room.RoomID, "$nope", "x"), mautrix.MNotFound, http.StatusNotFound)
		mustErr(t, carol.ReportEvent(ctx, room.RoomID, rude, "not my room"), mautrix.MNotFound, http.StatusNotFound)
		other, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		mustErr(t, bob.ReportEvent(ctx, other.RoomID, rude, "wrong room"), mautrix.MNotFound, http.StatusNotFound)
		for _, score := range []any{5, -101, -2.5} {
			mustErrCode(t, reportEventWithScore(bob, room.RoomID, rude, map[string]any{"score": score}), "M_INVALID_PARAM", http.StatusBadRequest)
		}
		mustErrCode(t, reportEventWithScore(bob, room.RoomID, rude, map[string]any{"score": "-5"}), "M_BAD_JSON", http.StatusBadRequest)
		mustErrCode(t, reportEventWithScore(bob, room.RoomID, rude, map[string]any{"reason": 5}), "M_BAD_JSON", http.StatusBadRequest)

		// Rooms and users: no membership needed, but they must exist and a
		// reason is required.
		if err := carol.ReportRoom(ctx, room.RoomID, "spam room"); err != nil {
			t.Fatalf("room report: %v", err)
		}
		mustErr(t, carol.ReportRoom(ctx, "!missing:localhost", "x"), mautrix.MNotFound, http.StatusNotFound)
		_, err = carol.MakeRequest(ctx, http.MethodPost, carol.BuildClientURL("v3", "rooms", room.RoomID, "report"), map[string]any{}, nil)
		mustErrCode(t, err, "M_MISSING_PARAM", http.StatusBadRequest)
		if err := carol.ReportUser(ctx, alice.UserID, "harasses people"); err != nil {
			t.Fatalf("user report: %v", err)
		}
		mustErr(t, carol.ReportUser(ctx, "@ghost:localhost", "x"), mautrix.MNotFound, http.StatusNotFound)
		mustErrCode(t, carol.ReportUser(ctx, "not-a-user", "x"), "M_INVALID_PARAM", http.StatusBadRequest)

		// The admin API lists them, newest first, Synapse's way.
		_, err = bob.MakeRequest(ctx, http.MethodGet, bob.BuildURL(mautrix.SynapseAdminURLPath{"v1", "event_reports"}), nil, nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		events := listReports(t, admin, "event", nil)
		if events.Total != 2 || len(events.EventReports) != 2 || events.NextToken != nil {
			t.Fatalf("event reports: %+v", events)
		}
		r := events.EventReports[1]
		if r.EventID != rude || r.RoomID != room.RoomID || r.UserID != bob.UserID || r.Sender != alice.UserID ||
			r.Reason == nil || *r.Reason != "rude" || r.Score == nil || *r.Score != -80 || r.ReceivedTS == 0 ||
			r.Name == nil || *r.Name != "Lobby" || r.CanonicalAlias == nil || *r.CanonicalAlias != "#lobby:localhost" {
			t.Errorf("first event report: %+v", r)
		}
		if first := events.EventReports[0]; first.Reason != nil || first.Score != nil || first.ID <= r.ID {
			t.Errorf("second event report (no reason, no score): %+v", first)
		}
		page := listReports(t, admin, "event", map[string]string{"limit": "1", "dir": "f"})
		if len(page.EventReports) != 1 || page.EventReports[0].ID != r.ID || page.NextToken == nil || *page.NextToken != 1 {
			t.Errorf("first page: %+v", page)
		}
		page = listReports(t, admin, "event", map[string]string{"limit": "1", "dir": "f", "from": "1"})
		if len(page.EventReports) != 1 || page.NextToken != nil {
			t.Errorf("last page: %+v", page)
		}
		if l := listReports(t, admin, "event", map[string]string{"user_id": string(carol.UserID)}); l.Total != 0 {
			t.Errorf("filtered by reporter: %+v", l)
		}
		if l := listReports(t, admin, "event", map[string]string{"event_sender_user_id": string(alice.UserID)}); l.Total != 2 {
			t.Errorf("filtered by sender: %+v", l)
		}
		var detail adminReport
		if _, err := admin.MakeRequest(ctx, http.MethodGet, admin.BuildURL(mautrix.SynapseAdminURLPath{"v1", "event_reports", fmt.Sprint(r.ID)}), nil, &detail); err != nil {
			t.Fatal(err)
		}
		var evt struct {
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		}
		if err := json.Unmarshal(detail.EventJSON, &evt); err != nil || evt.Content.Body != "something rude" {
			t.Errorf("event_json = %s (%v)", detail.EventJSON, err)
		}
		_, err = admin.MakeRequest(ctx, http.MethodGet, admin.BuildURL(mautrix.SynapseAdminURLPath{"v1", "event_reports", "999"}), nil, nil)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = admin.MakeRequest(ctx, http.MethodGet, admin.BuildURLWithQuery(mautrix.SynapseAdminURLPath{"v1", "event_reports"}, map[string]string{"dir": "x"}), nil, nil)
		mustErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)

		rooms := listReports(t, admin, "room", nil)
		if rooms.Total != 1 || rooms.RoomReports[0].RoomID != room.RoomID || rooms.RoomReports[0].UserID != carol.UserID ||
			*rooms.RoomReports[0].Reason != "spam room" {
			t.Errorf("room reports: %+v", rooms)
		}
		users := listReports(t, admin, "user", nil)
		if users.Total != 1 || users.UserReports[0].TargetUserID != alice.UserID || users.UserReports[0].UserID != carol.UserID {
			t.Errorf("user reports: %+v", users)
		}
	})
}

// Reports are rate-limited per reporter: a burst, then 429.
func TestReportRateLimit(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), func(c *config.Config) {
		c.RateLimits.Report = config.Default().RateLimits.Report
	})
	alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	alice.DefaultHTTPRetries = 0
	var limited error
	for i := 0; i < 20 && limited == nil; i++ {
		limited = alice.ReportRoom(ctx, room.RoomID, fmt.Sprint("again ", i))
	}
	rlCheckLimited(t, limited, 10*time.Second)
	// Another user is not held back by alice's reports.
	if err := bob.ReportRoom(ctx, room.RoomID, "first"); err != nil {
		t.Fatalf("bob's report: %v", err)
	}
}
