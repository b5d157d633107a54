package clientapi_test

import (
	"encoding/json"
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

// ephRoom makes a public room of alice's that the other clients join.
func ephRoom(t *testing.T, alice *mautrix.Client, others ...*mautrix.Client) id.RoomID {
	t.Helper()
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
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

func ephSync(t *testing.T, cli *mautrix.Client, since string, timeout time.Duration) *mautrix.RespSync {
	t.Helper()
	resp, err := cli.SyncRequest(ctx, int(timeout.Milliseconds()), since, "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// ephEvents returns the room's ephemeral events of one type in a sync.
func ephEvents(resp *mautrix.RespSync, roomID id.RoomID, evtType event.Type) []*event.Event {
	jr := resp.Rooms.Join[roomID]
	if jr == nil {
		return nil
	}
	var out []*event.Event
	for _, e := range jr.Ephemeral.Events {
		if e.Type.Type == evtType.Type {
			out = append(out, e)
		}
	}
	return out
}

// ephTyping returns who the sync says types in the room, and whether it
// said anything about typing there.
func ephTyping(t *testing.T, resp *mautrix.RespSync, roomID id.RoomID) ([]id.UserID, bool) {
	t.Helper()
	evts := ephEvents(resp, roomID, event.EphemeralEventTyping)
	if len(evts) == 0 {
		return nil, false
	}
	if len(evts) > 1 {
		t.Fatalf("%d m.typing events in one room", len(evts))
	}
	var content event.TypingEventContent
	if err := json.Unmarshal(evts[0].Content.VeryRaw, &content); err != nil {
		t.Fatal(err)
	}
	if content.UserIDs == nil {
		t.Fatalf("m.typing without user_ids: %s", evts[0].Content.VeryRaw)
	}
	return content.UserIDs, true
}

// ephReceipts merges the room's m.receipt events in a sync.
func ephReceipts(t *testing.T, resp *mautrix.RespSync, roomID id.RoomID) event.ReceiptEventContent {
	t.Helper()
	out := event.ReceiptEventContent{}
	for _, e := range ephEvents(resp, roomID, event.EphemeralEventReceipt) {
		var content event.ReceiptEventContent
		if err := json.Unmarshal(e.Content.VeryRaw, &content); err != nil {
			t.Fatal(err)
		}
		for evtID, types := range content {
			for rt, users := range types {
				for u, r := range users {
					out.Set(evtID, rt, u, r)
				}
			}
		}
	}
	return out
}

func ephSend(t *testing.T, cli *mautrix.Client, roomID id.RoomID, content map[string]any) id.EventID {
	t.Helper()
	resp, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage, content)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

func ephText(body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body}
}

func ephErrCode(t *testing.T, err error, code string, status int) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.RespError == nil {
		t.Fatalf("error = %v, want %s", err, code)
	}
	if httpErr.RespError.ErrCode != code || httpErr.Response.StatusCode != status {
		t.Fatalf("error = %s (HTTP %d), want %s (HTTP %d)", httpErr.RespError.ErrCode, httpErr.Response.StatusCode, code, status)
	}
}

func TestTypingNotifications(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, eve := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("eve")
		roomID := ephRoom(t, alice, bob)
		quiet := ephRoom(t, alice, bob)

		first := ephSync(t, bob, "", 0)
		if _, said := ephTyping(t, first, roomID); said {
			t.Fatalf("initial sync reports typing in a room nobody types in")
		}

		// A waiting long-poll is woken by the typing notification.
		type result struct {
			resp *mautrix.RespSync
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			resp, err := bob.SyncRequest(ctx, 20000, first.NextBatch, "", false, "")
			if err != nil {
				t.Error(err)
			}
			done <- result{resp, time.Since(start)}
		}()
		time.Sleep(300 * time.Millisecond)
		if _, err := alice.UserTyping(ctx, roomID, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.resp == nil {
			t.FailNow()
		}
		if r.took > 10*time.Second {
			t.Fatalf("long-poll returned after %v: typing did not wake it", r.took)
		}
		if users, _ := ephTyping(t, r.resp, roomID); !slices.Equal(users, []id.UserID{alice.UserID}) {
			t.Fatalf("typing = %v, want alice", users)
		}
		if _, said := ephTyping(t, r.resp, quiet); said {
			t.Fatalf("typing reported for a room whose typing did not change")
		}
		afterStart := r.resp.NextBatch

		// Nothing new: a short poll from there says nothing about typing.
		same := ephSync(t, bob, afterStart, 0)
		if _, said := ephTyping(t, same, roomID); said {
			t.Fatalf("unchanged typing sent again")
		}
		// Refreshing the typing state changes nothing others see.
		if _, err := alice.UserTyping(ctx, roomID, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, said := ephTyping(t, ephSync(t, bob, afterStart, 0), roomID); said {
			t.Fatalf("a refresh was sent as a change")
		}

		// An initial sync shows who is typing now.
		if users, _ := ephTyping(t, ephSync(t, bob, "", 0), roomID); !slices.Equal(users, []id.UserID{alice.UserID}) {
			t.Fatalf("initial sync typing = %v, want alice", users)
		}

		// The ephemeral filter can leave typing out.
		filtered, err := bob.SyncRequest(ctx, 0, "", `{"room":{"ephemeral":{"not_types":["m.typing"]}}}`, false, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, said := ephTyping(t, filtered, roomID); said {
			t.Fatalf("typing sent despite the filter")
		}

		// Stopping clears it.
		if _, err := alice.UserTyping(ctx, roomID, false, 0); err != nil {
			t.Fatal(err)
		}
		stopped := ephSync(t, bob, afterStart, 0)
		if users, said := ephTyping(t, stopped, roomID); !said || len(users) != 0 {
			t.Fatalf("after stop: typing = %v (sent: %v), want an empty list", users, said)
		}

		// A short timeout runs out by itself and wakes the long-poll.
		if _, err := alice.UserTyping(ctx, roomID, true, time.Second); err != nil {
			t.Fatal(err)
		}
		typing := ephSync(t, bob, stopped.NextBatch, 0)
		if users, _ := ephTyping(t, typing, roomID); !slices.Equal(users, []id.UserID{alice.UserID}) {
			t.Fatalf("typing = %v, want alice", users)
		}
		start := time.Now()
		expired := ephSync(t, bob, typing.NextBatch, 20*time.Second)
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("expiry did not wake the long-poll (%v)", took)
		}
		if users, said := ephTyping(t, expired, roomID); !said || len(users) != 0 {
			t.Fatalf("after timeout: typing = %v (sent: %v), want an empty list", users, said)
		}

		// Only for yourself, only where you are joined, typing required.
		_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "rooms", roomID, "typing", bob.UserID),
			mautrix.ReqTyping{Typing: true, Timeout: 1000}, nil)
		ephErrCode(t, err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = eve.UserTyping(ctx, roomID, true, time.Second)
		ephErrCode(t, err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = eve.UserTyping(ctx, "!nowhere:"+id.RoomID(srv.Config.ServerName), true, time.Second)
		ephErrCode(t, err, "M_FORBIDDEN", http.StatusForbidden)
		_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "rooms", roomID, "typing", alice.UserID),
			map[string]any{"timeout": 1000}, nil)
		ephErrCode(t, err, "M_MISSING_PARAM", http.StatusBadRequest)
		_, err = alice.MakeRequest(ctx, http.MethodPut, alice.BuildClientURL("v3", "rooms", roomID, "typing", alice.UserID),
			map[string]any{"typing": "yes"}, nil)
		ephErrCode(t, err, "M_BAD_JSON", http.StatusBadRequest)
	})
}

func TestReceipts(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		roomID := ephRoom(t, alice, bob)
		first := ephSend(t, alice, roomID, ephText("one"))
		second := ephSend(t, alice, roomID, ephText("two"))
		aliceStart := ephSync(t, alice, "", 0)
		bobStart := ephSync(t, bob, "", 0)

		// A public receipt reaches the other members.
		if err := bob.SendReceipt(ctx, roomID, first, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		got := ephReceipts(t, ephSync(t, alice, aliceStart.NextBatch, 0), roomID)
		r, ok := got[first][event.ReceiptTypeRead][bob.UserID]
		if !ok || time.Since(r.Timestamp) > time.Minute || r.ThreadID != "" {
			t.Fatalf("alice sees receipts %+v, want bob's m.read on the first message", got)
		}

		// A receipt never moves backwards: second, then first again.
		if err := bob.SendReceipt(ctx, roomID, second, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		afterSecond := ephSync(t, alice, aliceStart.NextBatch, 0)
		if err := bob.SendReceipt(ctx, roomID, first, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		if got := ephReceipts(t, ephSync(t, alice, afterSecond.NextBatch, 0), roomID); len(got) != 0 {
			t.Fatalf("a receipt moved backwards: %+v", got)
		}

		// A private receipt reaches only its owner.
		third := ephSend(t, alice, roomID, ephText("three"))
		aliceMark := ephSync(t, alice, afterSecond.NextBatch, 0).NextBatch
		if err := bob.SendReceipt(ctx, roomID, third, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		if got := ephReceipts(t, ephSync(t, alice, aliceMark, 0), roomID); len(got) != 0 {
			t.Fatalf("alice sees bob's private receipt: %+v", got)
		}
		bobSees := ephReceipts(t, ephSync(t, bob, bobStart.NextBatch, 0), roomID)
		if _, ok := bobSees[third][event.ReceiptTypeReadPrivate][bob.UserID]; !ok {
			t.Fatalf("bob does not see his private receipt: %+v", bobSees)
		}
		if _, ok := bobSees[second][event.ReceiptTypeRead][bob.UserID]; !ok {
			t.Fatalf("bob does not see his public receipt: %+v", bobSees)
		}

		// A threaded receipt carries its thread_id.
		if err := bob.SendReceipt(ctx, roomID, third, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"}); err != nil {
			t.Fatal(err)
		}
		got = ephReceipts(t, ephSync(t, alice, aliceMark, 0), roomID)
		if r := got[third][event.ReceiptTypeRead][bob.UserID]; r.ThreadID != "main" {
			t.Fatalf("threaded receipt = %+v", got)
		}

		// A newcomer's first sync after joining, incremental or initial,
		// has the current public receipts only.
		carolStart := ephSync(t, carol, "", 0)
		if _, err := carol.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		joined := ephReceipts(t, ephSync(t, carol, carolStart.NextBatch, 0), roomID)
		if _, ok := joined[second][event.ReceiptTypeRead][bob.UserID]; !ok {
			t.Fatalf("carol's first sync after joining misses bob's receipt: %+v", joined)
		}
		initial := ephReceipts(t, ephSync(t, carol, "", 0), roomID)
		if _, ok := initial[second][event.ReceiptTypeRead][bob.UserID]; !ok {
			t.Fatalf("initial sync misses bob's unthreaded receipt: %+v", initial)
		}
		if _, ok := initial[third][event.ReceiptTypeRead][bob.UserID]; !ok {
			t.Fatalf("initial sync misses bob's threaded receipt: %+v", initial)
		}
		if _, ok := initial[third][event.ReceiptTypeReadPrivate]; ok {
			t.Fatalf("initial sync shows bob's private receipt to carol: %+v", initial)
		}

		// Bad requests.
		err := bob.SendReceipt(ctx, roomID, "$missing", event.ReceiptTypeRead, nil)
		ephErrCode(t, err, "M_NOT_FOUND", http.StatusNotFound)
		err = bob.SendReceipt(ctx, roomID, first, "m.seen", nil)
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
		err = bob.SendReceipt(ctx, roomID, first, event.ReceiptTypeRead, map[string]any{"thread_id": ""})
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
		err = bob.SendReceipt(ctx, roomID, first, event.ReceiptTypeRead, map[string]any{"thread_id": 5})
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
		err = bob.SendReceipt(ctx, roomID, first, "m.fully_read", map[string]any{"thread_id": "main"})
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
		outsider := srv.NewUser("dave")
		err = outsider.SendReceipt(ctx, roomID, first, event.ReceiptTypeRead, nil)
		ephErrCode(t, err, "M_FORBIDDEN", http.StatusForbidden)

		// m.fully_read through the receipt endpoint moves the marker.
		if err := bob.SendReceipt(ctx, roomID, second, "m.fully_read", nil); err != nil {
			t.Fatal(err)
		}
		var marker struct {
			EventID id.EventID `json:"event_id"`
		}
		if err := bob.GetRoomAccountData(ctx, roomID, "m.fully_read", &marker); err != nil || marker.EventID != second {
			t.Fatalf("m.fully_read = %+v, %v", marker, err)
		}
	})
}

func TestReadMarkers(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		roomID := ephRoom(t, alice, bob)
		first := ephSend(t, alice, roomID, ephText("one"))
		second := ephSend(t, alice, roomID, ephText("two"))
		bobStart := ephSync(t, bob, "", 0)
		aliceStart := ephSync(t, alice, "", 0)

		err := bob.SetReadMarkers(ctx, roomID, &mautrix.ReqSetReadMarkers{FullyRead: second, Read: first, ReadPrivate: second})
		if err != nil {
			t.Fatal(err)
		}
		var marker struct {
			EventID id.EventID `json:"event_id"`
		}
		if err := bob.GetRoomAccountData(ctx, roomID, "m.fully_read", &marker); err != nil || marker.EventID != second {
			t.Fatalf("m.fully_read = %+v, %v", marker, err)
		}
		bobNext := ephSync(t, bob, bobStart.NextBatch, 0)
		jr := bobNext.Rooms.Join[roomID]
		if jr == nil {
			t.Fatalf("bob's sync lacks the room")
		}
		found := false
		for _, e := range jr.AccountData.Events {
			if e.Type.Type == "m.fully_read" {
				found = json.Unmarshal(e.Content.VeryRaw, &marker) == nil && marker.EventID == second
			}
		}
		if !found {
			t.Fatalf("m.fully_read not in bob's sync: %+v", jr.AccountData.Events)
		}
		mine := ephReceipts(t, bobNext, roomID)
		if _, ok := mine[first][event.ReceiptTypeRead][bob.UserID]; !ok {
			t.Fatalf("bob's m.read missing: %+v", mine)
		}
		if _, ok := mine[second][event.ReceiptTypeReadPrivate][bob.UserID]; !ok {
			t.Fatalf("bob's m.read.private missing: %+v", mine)
		}
		theirs := ephReceipts(t, ephSync(t, alice, aliceStart.NextBatch, 0), roomID)
		if _, ok := theirs[first][event.ReceiptTypeRead][bob.UserID]; !ok || len(theirs) != 1 {
			t.Fatalf("alice sees %+v, want only bob's m.read", theirs)
		}

		// The marker does not move backwards.
		if err := bob.SetReadMarkers(ctx, roomID, &mautrix.ReqSetReadMarkers{FullyRead: first}); err != nil {
			t.Fatal(err)
		}
		if err := bob.GetRoomAccountData(ctx, roomID, "m.fully_read", &marker); err != nil || marker.EventID != second {
			t.Fatalf("m.fully_read moved back: %+v, %v", marker, err)
		}
		// It cannot be set as plain account data, nor point elsewhere.
		err = bob.SetRoomAccountData(ctx, roomID, "m.fully_read", map[string]any{"event_id": first})
		ephErrCode(t, err, "M_BAD_JSON", http.StatusMethodNotAllowed)
		err = bob.SetReadMarkers(ctx, roomID, &mautrix.ReqSetReadMarkers{FullyRead: "$nope"})
		ephErrCode(t, err, "M_NOT_FOUND", http.StatusNotFound)
		err = bob.SetReadMarkers(ctx, roomID, map[string]any{"m.read": 3})
		ephErrCode(t, err, "M_BAD_JSON", http.StatusBadRequest)
	})
}

// ephCounts returns the room's unread notification counts in a sync.
func ephCounts(t *testing.T, resp *mautrix.RespSync, roomID id.RoomID) (notify, highlight int) {
	t.Helper()
	jr := resp.Rooms.Join[roomID]
	if jr == nil {
		t.Fatalf("room %s not in sync", roomID)
	}
	if jr.UnreadNotifications == nil {
		t.Fatalf("room %s has no unread_notifications", roomID)
	}
	return jr.UnreadNotifications.NotificationCount, jr.UnreadNotifications.HighlightCount
}

func ephWantCounts(t *testing.T, resp *mautrix.RespSync, roomID id.RoomID, notify, highlight int) {
	t.Helper()
	if n, h := ephCounts(t, resp, roomID); n != notify || h != highlight {
		t.Fatalf("unread counts = %d notifications, %d highlights; want %d, %d", n, h, notify, highlight)
	}
}

func TestUnreadNotificationCounts(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		roomID := ephRoom(t, alice, bob, carol)
		start := ephSync(t, bob, "", 0)
		ephWantCounts(t, start, roomID, 0, 0)

		// Plain messages notify without highlight; notices and the
		// user's own messages do not count; mentions highlight.
		ephSend(t, alice, roomID, ephText("hello"))
		ephSend(t, carol, roomID, ephText("hi"))
		ephSend(t, alice, roomID, map[string]any{"msgtype": "m.notice", "body": "bot says"})
		s1 := ephSync(t, bob, start.NextBatch, 0)
		ephWantCounts(t, s1, roomID, 2, 0)

		ephSend(t, alice, roomID, map[string]any{"msgtype": "m.text", "body": "bob: look",
			"m.mentions": map[string]any{"user_ids": []id.UserID{bob.UserID}}})
		s2 := ephSync(t, bob, s1.NextBatch, 0)
		ephWantCounts(t, s2, roomID, 3, 1)
		// A room mention by someone allowed to (alice created the room).
		last := ephSend(t, alice, roomID, map[string]any{"msgtype": "m.text", "body": "@room hi",
			"m.mentions": map[string]any{"room": true}})
		s3 := ephSync(t, bob, s2.NextBatch, 0)
		ephWantCounts(t, s3, roomID, 4, 2)
		// A mention of someone else is a plain message for bob.
		ephSend(t, alice, roomID, map[string]any{"msgtype": "m.text", "body": "carol?",
			"m.mentions": map[string]any{"user_ids": []id.UserID{carol.UserID}}})
		s4 := ephSync(t, bob, s3.NextBatch, 0)
		ephWantCounts(t, s4, roomID, 5, 2)

		// A read receipt resets the counts up to its event, and the sync
		// that follows carries the new counts.
		if err := bob.SendReceipt(ctx, roomID, last, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		s5 := ephSync(t, bob, s4.NextBatch, 0)
		ephWantCounts(t, s5, roomID, 1, 0)
		// A private receipt further on clears the rest.
		latest := ephSend(t, carol, roomID, ephText("more"))
		if err := bob.SendReceipt(ctx, roomID, latest, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		s6 := ephSync(t, bob, s5.NextBatch, 0)
		ephWantCounts(t, s6, roomID, 0, 0)

		// New messages count again; a redacted one stops counting.
		ephSend(t, alice, roomID, ephText("again"))
		gone := ephSend(t, alice, roomID, ephText("oops"))
		s7 := ephSync(t, bob, s6.NextBatch, 0)
		ephWantCounts(t, s7, roomID, 2, 0)
		if _, err := alice.RedactEvent(ctx, roomID, gone); err != nil {
			t.Fatal(err)
		}
		s8 := ephSync(t, bob, s7.NextBatch, 0)
		ephWantCounts(t, s8, roomID, 1, 0)
		// Sending a message reads everything before it.
		ephSend(t, bob, roomID, ephText("caught up"))
		s9 := ephSync(t, bob, s8.NextBatch, 0)
		ephWantCounts(t, s9, roomID, 0, 0)

		// A direct chat (two members) counts its messages too.
		dm, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, dm.RoomID); err != nil {
			t.Fatal(err)
		}
		s10 := ephSync(t, bob, s9.NextBatch, 0)
		ephWantCounts(t, s10, dm.RoomID, 0, 0)
		ephSend(t, alice, dm.RoomID, ephText("psst"))
		ephSend(t, alice, dm.RoomID, ephText("you there?"))
		s11 := ephSync(t, bob, s10.NextBatch, 0)
		ephWantCounts(t, s11, dm.RoomID, 2, 0)
		if _, ok := s11.Rooms.Join[roomID]; ok {
			t.Fatalf("the group room, unchanged, is in the sync")
		}
		// An initial sync has the counts of every room.
		initial := ephSync(t, bob, "", 0)
		ephWantCounts(t, initial, dm.RoomID, 2, 0)
		ephWantCounts(t, initial, roomID, 0, 0)
	})
}

// ephThreadSync is the part of a sync response mautrix does not model.
type ephThreadSync struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[id.RoomID]struct {
			UnreadNotifications       mautrix.UnreadNotificationCounts                `json:"unread_notifications"`
			UnreadThreadNotifications map[id.EventID]mautrix.UnreadNotificationCounts `json:"unread_thread_notifications"`
		} `json:"join"`
	} `json:"rooms"`
}

func TestUnreadThreadNotificationCounts(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		roomID := ephRoom(t, alice, bob)
		root := ephSend(t, alice, roomID, ephText("root"))
		reply := ephSend(t, alice, roomID, map[string]any{"msgtype": "m.text", "body": "in thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		ephSend(t, alice, roomID, map[string]any{"msgtype": "m.text", "body": "in thread again",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})

		threadSync := func() ephThreadSync {
			t.Helper()
			filter := `{"room":{"timeline":{"unread_thread_notifications":true}}}`
			var out ephThreadSync
			u := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, map[string]string{"filter": filter, "timeout": "0"})
			if _, err := bob.MakeRequest(ctx, http.MethodGet, u, nil, &out); err != nil {
				t.Fatal(err)
			}
			return out
		}
		s := threadSync().Rooms.Join[roomID]
		if s.UnreadNotifications.NotificationCount != 1 || s.UnreadThreadNotifications[root].NotificationCount != 2 || len(s.UnreadThreadNotifications) != 1 {
			t.Fatalf("main %+v, threads %+v; want 1 in main, 2 in the thread", s.UnreadNotifications, s.UnreadThreadNotifications)
		}
		// Without the filter flag, the counts cover the whole room.
		ephWantCounts(t, ephSync(t, bob, "", 0), roomID, 3, 0)

		// A receipt in the thread reads only the thread, up to its event.
		if err := bob.SendReceipt(ctx, roomID, reply, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: string(root)}); err != nil {
			t.Fatal(err)
		}
		s = threadSync().Rooms.Join[roomID]
		if s.UnreadNotifications.NotificationCount != 1 || s.UnreadThreadNotifications[root].NotificationCount != 1 {
			t.Fatalf("main %+v, threads %+v; want 1 in main, 1 in the thread", s.UnreadNotifications, s.UnreadThreadNotifications)
		}
		// A receipt on the main timeline reads the main timeline only.
		if err := bob.SendReceipt(ctx, roomID, root, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"}); err != nil {
			t.Fatal(err)
		}
		s = threadSync().Rooms.Join[roomID]
		if s.UnreadNotifications.NotificationCount != 0 || s.UnreadThreadNotifications[root].NotificationCount != 1 {
			t.Fatalf("main %+v, threads %+v; want 0 in main, 1 in the thread", s.UnreadNotifications, s.UnreadThreadNotifications)
		}
		// A receipt naming another thread than its event's is refused.
		err := bob.SendReceipt(ctx, roomID, reply, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"})
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
	})
}
