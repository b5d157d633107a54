package clientapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/homeserver/push"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// pushRules reads the caller's global ruleset as the server sends it.
func pushRules(t *testing.T, cli *mautrix.Client) gjson.Result {
	t.Helper()
	raw, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildClientURL("v3", "pushrules")+"/", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return gjson.ParseBytes(raw).Get("global")
}

func ruleIDsOf(rules gjson.Result) []string {
	var out []string
	for _, r := range rules.Array() {
		out = append(out, r.Get("rule_id").Str)
	}
	return out
}

func putRule(t *testing.T, cli *mautrix.Client, kind pushrules.PushRuleType, ruleID string, req *mautrix.ReqPutPushRule) {
	t.Helper()
	if err := cli.PutPushRule(ctx, "global", kind, ruleID, req); err != nil {
		t.Fatalf("put %s rule %s: %v", kind, ruleID, err)
	}
}

var (
	actNotify    = &pushrules.PushAction{Action: pushrules.ActionNotify}
	actHighlight = &pushrules.PushAction{Action: pushrules.ActionSetTweak, Tweak: pushrules.TweakHighlight, Value: true}
)

// rawRequest is a request mautrix has no method for, through its client.
func rawRequest(cli *mautrix.Client, method string, path mautrix.ClientURLPath, query map[string]string, body any) ([]byte, error) {
	return cli.MakeRequest(ctx, method, cli.BuildURLWithQuery(path, query), body, nil)
}

// syncPushRules returns the m.push_rules account data in a sync, if any.
func syncPushRules(resp *mautrix.RespSync) (gjson.Result, bool) {
	for _, e := range resp.AccountData.Events {
		if e.Type.Type == "m.push_rules" {
			return gjson.ParseBytes(e.Content.VeryRaw).Get("global"), true
		}
	}
	return gjson.Result{}, false
}

func TestPushRulesAPI(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		bob, carol := srv.NewUser("bob"), srv.NewUser("carol")

		// The defaults, with the user's ID filled in; also in the initial sync.
		rules, err := bob.GetPushRules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rules.Override) == 0 || rules.Override[0].RuleID != ".m.rule.master" || rules.Override[0].Enabled || len(rules.Content) != 0 {
			t.Fatalf("default override rules %+v, content %+v", rules.Override, rules.Content)
		}
		initial := ephSync(t, bob, "", 0)
		adRules, ok := syncPushRules(initial)
		if !ok || adRules.Get(`override.#(rule_id==".m.rule.invite_for_me").conditions.#(key=="state_key").pattern`).Str != string(bob.UserID) {
			t.Fatalf("initial sync m.push_rules = %s (present %v)", adRules.Raw, ok)
		}

		// A keyword rule, then ordering with before/after.
		putRule(t, bob, pushrules.ContentRule, "cake", &mautrix.ReqPutPushRule{Pattern: "cake", Actions: []*pushrules.PushAction{actNotify, actHighlight}})
		got, err := bob.GetPushRule(ctx, "global", pushrules.ContentRule, "cake")
		if err != nil || got.Pattern != "cake" || !got.Enabled || got.Default || len(got.Actions) != 2 {
			t.Fatalf("get cake rule = %+v, %v", got, err)
		}
		putRule(t, bob, pushrules.ContentRule, "first", &mautrix.ReqPutPushRule{Pattern: "a", Actions: []*pushrules.PushAction{actNotify}})
		putRule(t, bob, pushrules.ContentRule, "last", &mautrix.ReqPutPushRule{Pattern: "b", After: "cake", Actions: []*pushrules.PushAction{actNotify}})
		putRule(t, bob, pushrules.ContentRule, "middle", &mautrix.ReqPutPushRule{Pattern: "c", Before: "cake", Actions: []*pushrules.PushAction{actNotify}})
		putRule(t, bob, pushrules.ContentRule, "both", &mautrix.ReqPutPushRule{Pattern: "d", Before: "first", After: "last", Actions: []*pushrules.PushAction{actNotify}})
		// Updating without before/after keeps the place.
		putRule(t, bob, pushrules.ContentRule, "cake", &mautrix.ReqPutPushRule{Pattern: "cakes", Actions: []*pushrules.PushAction{actNotify}})
		if ids := ruleIDsOf(pushRules(t, bob).Get("content")); !slices.Equal(ids, []string{"both", "first", "middle", "cake", "last"}) {
			t.Fatalf("content rules in order %v", ids)
		}

		// A change reaches the next sync as m.push_rules; no change, no event.
		if err := bob.SetPushRuleEnabled(ctx, "global", pushrules.UnderrideRule, ".m.rule.message", false); err != nil {
			t.Fatal(err)
		}
		next := ephSync(t, bob, initial.NextBatch, 0)
		adRules, ok = syncPushRules(next)
		if !ok || !slices.Equal(ruleIDsOf(adRules.Get("content")), []string{"both", "first", "middle", "cake", "last"}) ||
			adRules.Get(`underride.#(rule_id==".m.rule.message").enabled`).Bool() {
			t.Fatalf("incremental sync m.push_rules = %s (present %v)", adRules.Raw, ok)
		}
		if _, ok := syncPushRules(ephSync(t, bob, next.NextBatch, 0)); ok {
			t.Fatal("m.push_rules in a sync without a change")
		}
		// The account data API shows the same (and refuses writes).
		var content map[string]json.RawMessage
		if err := bob.GetAccountData(ctx, "m.push_rules", &content); err != nil || gjson.GetBytes(content["global"], "content.#").Int() != 5 {
			t.Fatalf("m.push_rules account data = %s, %v", content["global"], err)
		}

		// enabled and actions, of user and default rules.
		raw, err := rawRequest(bob, http.MethodGet, mautrix.ClientURLPath{"v3", "pushrules", "global", "underride", ".m.rule.message", "enabled"}, nil, nil)
		if err != nil || gjson.GetBytes(raw, "enabled").Type != gjson.False {
			t.Fatalf("enabled = %s, %v", raw, err)
		}
		if err := bob.PutPushRuleActions(ctx, "global", pushrules.UnderrideRule, ".m.rule.call", []*pushrules.PushAction{actNotify}); err != nil {
			t.Fatal(err)
		}
		raw, err = rawRequest(bob, http.MethodGet, mautrix.ClientURLPath{"v3", "pushrules", "global", "underride", ".m.rule.call", "actions"}, nil, nil)
		if err != nil || gjson.GetBytes(raw, "actions").Raw != `["notify"]` {
			t.Fatalf("actions = %s, %v", raw, err)
		}
		if err := bob.SetPushRuleEnabled(ctx, "global", pushrules.ContentRule, "middle", false); err != nil {
			t.Fatal(err)
		}
		if r, err := bob.GetPushRule(ctx, "global", pushrules.ContentRule, "middle"); err != nil || r.Enabled {
			t.Fatalf("middle = %+v, %v", r, err)
		}
		// Legacy actions are stripped.
		putRule(t, bob, pushrules.RoomRule, "!muted:localhost", &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{{Action: pushrules.ActionDontNotify}}})
		raw, err = rawRequest(bob, http.MethodGet, mautrix.ClientURLPath{"v3", "pushrules", "global", "room", "!muted:localhost"}, nil, nil)
		if err != nil || gjson.GetBytes(raw, "actions").Raw != `[]` || gjson.GetBytes(raw, "conditions").Exists() {
			t.Fatalf("room rule = %s, %v", raw, err)
		}

		// Deleting.
		if err := bob.DeletePushRule(ctx, "global", pushrules.ContentRule, "first"); err != nil {
			t.Fatal(err)
		}
		if ids := ruleIDsOf(pushRules(t, bob).Get("content")); !slices.Equal(ids, []string{"both", "middle", "cake", "last"}) {
			t.Fatalf("after delete %v", ids)
		}

		// Errors.
		notify := []*pushrules.PushAction{actNotify}
		err = bob.PutPushRule(ctx, "global", pushrules.ContentRule, ".m.rule.mine", &mautrix.ReqPutPushRule{Pattern: "x", Actions: notify})
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
		err = bob.PutPushRule(ctx, "global", pushrules.ContentRule, "x", &mautrix.ReqPutPushRule{Pattern: "x", Before: "nope", Actions: notify})
		ephErrCode(t, err, "M_UNKNOWN", http.StatusBadRequest)
		err = bob.PutPushRule(ctx, "global", pushrules.OverrideRule, "x", &mautrix.ReqPutPushRule{After: ".m.rule.master", Actions: notify})
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
		err = bob.PutPushRule(ctx, "global", pushrules.ContentRule, "x", &mautrix.ReqPutPushRule{Actions: notify})
		ephErrCode(t, err, "M_MISSING_PARAM", http.StatusBadRequest)
		err = bob.PutPushRule(ctx, "global", pushrules.SenderRule, "not-a-user", &mautrix.ReqPutPushRule{Actions: notify})
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
		_, err = rawRequest(bob, http.MethodPut, mautrix.ClientURLPath{"v3", "pushrules", "global", "content", "x"}, nil, map[string]any{"pattern": "x"})
		ephErrCode(t, err, "M_MISSING_PARAM", http.StatusBadRequest)
		_, err = rawRequest(bob, http.MethodPut, mautrix.ClientURLPath{"v3", "pushrules", "global", "content", "x"}, nil, map[string]any{"pattern": "x", "actions": []string{"explode"}})
		ephErrCode(t, err, "M_BAD_JSON", http.StatusBadRequest)
		_, err = rawRequest(bob, http.MethodPut, mautrix.ClientURLPath{"v3", "pushrules", "global", "override", "x"}, nil,
			map[string]any{"actions": []string{}, "conditions": []map[string]any{{"kind": "event_match", "key": "type"}}})
		ephErrCode(t, err, "M_BAD_JSON", http.StatusBadRequest)
		_, err = rawRequest(bob, http.MethodPut, mautrix.ClientURLPath{"v3", "pushrules", "global", "bogus", "x"}, nil, map[string]any{"actions": []string{}})
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
		_, err = rawRequest(bob, http.MethodPut, mautrix.ClientURLPath{"v3", "pushrules", "global", "content", "a/b"}, nil, map[string]any{"pattern": "x", "actions": []string{}})
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
		ephErrCode(t, bob.DeletePushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.master"), "M_INVALID_PARAM", http.StatusBadRequest)
		ephErrCode(t, bob.DeletePushRule(ctx, "global", pushrules.ContentRule, "nope"), "M_NOT_FOUND", http.StatusNotFound)
		_, err = bob.GetPushRule(ctx, "global", pushrules.ContentRule, "nope")
		ephErrCode(t, err, "M_NOT_FOUND", http.StatusNotFound)
		ephErrCode(t, bob.SetPushRuleEnabled(ctx, "global", pushrules.ContentRule, "nope", true), "M_NOT_FOUND", http.StatusNotFound)
		ephErrCode(t, bob.PutPushRuleActions(ctx, "global", pushrules.OverrideRule, ".m.rule.nope", notify), "M_NOT_FOUND", http.StatusNotFound)
		_, err = rawRequest(bob, http.MethodPut, mautrix.ClientURLPath{"v3", "pushrules", "global", "content", "cake", "enabled"}, nil, map[string]any{})
		ephErrCode(t, err, "M_MISSING_PARAM", http.StatusBadRequest)

		// Another user's rules are their own.
		if got := pushRules(t, carol); len(got.Get("content").Array()) != 0 || !got.Get(`underride.#(rule_id==".m.rule.message").enabled`).Bool() {
			t.Fatalf("carol's rules changed: %s", got.Raw)
		}
	})
}

// TestPushRuleCounts checks the unread counts /sync computes with each
// user's own rules: mentions, room mentions by someone allowed to, direct
// chats, a keyword rule added by PUT, and muted rooms.
func TestPushRuleCounts(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		roomID := ephRoom(t, alice, bob, carol)
		start := ephSync(t, bob, "", 0)

		// Mentions: of bob highlights, of the room by alice (the creator,
		// allowed) highlights, by carol (power 0 < 50) does not.
		ephSend(t, alice, roomID, ephText("hello"))
		ephSend(t, alice, roomID, map[string]any{"msgtype": "m.text", "body": "bob?", "m.mentions": map[string]any{"user_ids": []id.UserID{bob.UserID}}})
		ephSend(t, alice, roomID, map[string]any{"msgtype": "m.text", "body": "all", "m.mentions": map[string]any{"room": true}})
		last := ephSend(t, carol, roomID, map[string]any{"msgtype": "m.text", "body": "all", "m.mentions": map[string]any{"room": true}})
		s1 := ephSync(t, bob, start.NextBatch, 0)
		ephWantCounts(t, s1, roomID, 4, 2)
		if err := bob.SendReceipt(ctx, roomID, last, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}

		// A keyword: a content rule added by PUT highlights "deploy" as a
		// word, not inside one.
		putRule(t, bob, pushrules.ContentRule, "deploy", &mautrix.ReqPutPushRule{Pattern: "deploy", Actions: []*pushrules.PushAction{actNotify, actHighlight}})
		ephSend(t, alice, roomID, ephText("the DEPLOY failed"))
		ephSend(t, alice, roomID, ephText("redeployed"))
		s2 := ephSync(t, bob, s1.NextBatch, 0)
		ephWantCounts(t, s2, roomID, 2, 1)

		// Muted room (a room rule without actions): messages stop counting
		// (the counts computed before are recounted with the new rules),
		// mentions (override rules) still do.
		putRule(t, bob, pushrules.RoomRule, string(roomID), &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}})
		ephSend(t, alice, roomID, ephText("chatter"))
		ephSend(t, alice, roomID, map[string]any{"msgtype": "m.text", "body": "bob!", "m.mentions": map[string]any{"user_ids": []id.UserID{bob.UserID}}})
		s3 := ephSync(t, bob, s2.NextBatch, 0)
		ephWantCounts(t, s3, roomID, 2, 2) // the keyword (content rules come before room rules) and the mention
		// Unmuting counts the chatter again.
		if err := bob.DeletePushRule(ctx, "global", pushrules.RoomRule, string(roomID)); err != nil {
			t.Fatal(err)
		}
		ephSend(t, carol, roomID, ephText("more"))
		s4 := ephSync(t, bob, s3.NextBatch, 0)
		ephWantCounts(t, s4, roomID, 5, 2)

		// A direct chat (two members) notifies; muted with the legacy
		// dont_notify it does not; the master rule silences everything.
		dm, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, dm.RoomID); err != nil {
			t.Fatal(err)
		}
		ephSend(t, alice, dm.RoomID, ephText("psst"))
		s5 := ephSync(t, bob, s4.NextBatch, 0)
		ephWantCounts(t, s5, dm.RoomID, 1, 0)
		putRule(t, bob, pushrules.RoomRule, string(dm.RoomID), &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{{Action: pushrules.ActionDontNotify}}})
		ephSend(t, alice, dm.RoomID, ephText("still there?"))
		s6 := ephSync(t, bob, s5.NextBatch, 0)
		ephWantCounts(t, s6, dm.RoomID, 0, 0)
		if err := bob.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.master", true); err != nil {
			t.Fatal(err)
		}
		ephSend(t, alice, roomID, ephText("deploy again"))
		s7 := ephSync(t, bob, "", 0)
		ephWantCounts(t, s7, roomID, 0, 0)

		// Carol's counts (since her own last message) never saw bob's rules.
		c := ephSync(t, carol, "", 0)
		ephWantCounts(t, c, roomID, 1, 0)
	})
}

// pushNotifications reads GET /notifications.
func pushNotifications(t *testing.T, cli *mautrix.Client, query map[string]string) gjson.Result {
	t.Helper()
	raw, err := rawRequest(cli, http.MethodGet, mautrix.ClientURLPath{"v3", "notifications"}, query, nil)
	if err != nil {
		t.Fatal(err)
	}
	return gjson.ParseBytes(raw)
}

// waitNotifications waits until the push worker has written n of the
// user's notifications.
func waitNotifications(t *testing.T, cli *mautrix.Client, n int) gjson.Result {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := pushNotifications(t, cli, map[string]string{"limit": "100"})
		if len(got.Get("notifications").Array()) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d notifications, want %d: %s", len(got.Get("notifications").Array()), n, got.Raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNotificationsAPI(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		roomID := ephRoom(t, alice, bob)
		// Three members: no direct-chat rule.
		carol := srv.NewUser("carol")
		if _, err := carol.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		var sent []id.EventID
		for i, body := range []string{"one", "two", "three", "four", "five"} {
			content := ephText(body)
			if i == 1 || i == 3 {
				content["m.mentions"] = map[string]any{"user_ids": []id.UserID{bob.UserID}}
			}
			sent = append(sent, ephSend(t, alice, roomID, content))
		}
		ephSend(t, bob, roomID, ephText("my own"))                                      // not a notification
		ephSend(t, alice, roomID, map[string]any{"msgtype": "m.notice", "body": "bot"}) // suppressed
		if err := bob.SendReceipt(ctx, roomID, sent[2], event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		all := waitNotifications(t, bob, 5).Get("notifications").Array()
		if len(all) != 5 || all[0].Get("event.event_id").Str != string(sent[4]) || all[4].Get("event.event_id").Str != string(sent[0]) {
			t.Fatalf("notifications %v, want the five, newest first", all)
		}
		for i, n := range all {
			idx := 4 - i
			wantRead := idx <= 2
			highlight := idx == 1 || idx == 3
			if n.Get("read").Bool() != wantRead || n.Get("room_id").Str != string(roomID) || n.Get("ts").Int() <= 0 ||
				n.Get("event.content.body").Str == "" || n.Get("event.room_id").Exists() ||
				strings.Contains(n.Get("actions").Raw, "highlight") != highlight || !strings.Contains(n.Get("actions").Raw, "notify") {
				t.Fatalf("notification %d = %s (want read=%v, highlight=%v)", idx, n.Raw, wantRead, highlight)
			}
		}

		// Pages of two, newest first, then the rest; the last has no next_token.
		var paged []string
		from := ""
		for pages := 0; ; pages++ {
			q := map[string]string{"limit": "2"}
			if from != "" {
				q["from"] = from
			}
			page := pushNotifications(t, bob, q)
			for _, n := range page.Get("notifications").Array() {
				paged = append(paged, n.Get("event.event_id").Str)
			}
			from = page.Get("next_token").Str
			if from == "" {
				if pages != 2 {
					t.Fatalf("%d pages of two for five notifications", pages+1)
				}
				break
			}
		}
		if want := []string{string(sent[4]), string(sent[3]), string(sent[2]), string(sent[1]), string(sent[0])}; !slices.Equal(paged, want) {
			t.Fatalf("paged %v, want %v", paged, want)
		}
		// only=highlight.
		hl := pushNotifications(t, bob, map[string]string{"only": "highlight"}).Get("notifications").Array()
		if len(hl) != 2 || hl[0].Get("event.event_id").Str != string(sent[3]) || hl[1].Get("event.event_id").Str != string(sent[1]) {
			t.Fatalf("only=highlight = %v", hl)
		}
		// Alice was notified of nothing (bob's message: a plain message for her).
		if n := waitNotifications(t, alice, 1).Get("notifications.#").Int(); n != 1 {
			t.Fatalf("alice has %d notifications", n)
		}
		_, err := rawRequest(bob, http.MethodGet, mautrix.ClientURLPath{"v3", "notifications"}, map[string]string{"from": "bogus"}, nil)
		ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
	})
}

// gateway is a push gateway on loopback that records what it gets.
type gateway struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []gjson.Result
	// answer decides each answer: status and body.
	answer func(req gjson.Result) (int, string)
	ch     chan gjson.Result
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{ch: make(chan gjson.Result, 1000), answer: func(gjson.Result) (int, string) { return 200, `{"rejected":[]}` }}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := gjson.ParseBytes(body)
		if r.Method != http.MethodPost || r.URL.Path != "/_matrix/push/v1/notify" || r.Header.Get("Content-Type") != "application/json" || !req.IsObject() {
			t.Errorf("gateway got %s %s (%s): %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"), body)
		}
		g.mu.Lock()
		answer := g.answer
		g.mu.Unlock()
		status, out := answer(req)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(out))
		select {
		case g.ch <- req:
		default: // a test that no longer listens (retries while stopping)
		}
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) setAnswer(f func(req gjson.Result) (int, string)) {
	g.mu.Lock()
	g.answer = f
	g.mu.Unlock()
}

// next returns the next request the gateway got.
func (g *gateway) next(t *testing.T) gjson.Result {
	t.Helper()
	select {
	case req := <-g.ch:
		return req.Get("notification")
	case <-time.After(15 * time.Second):
		t.Fatal("the push gateway got nothing")
		return gjson.Result{}
	}
}

// quiet fails if the gateway gets a request within d.
func (g *gateway) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case req := <-g.ch:
		t.Fatalf("the push gateway got %s", req.Raw)
	case <-time.After(d):
	}
}

func (g *gateway) url() string { return g.srv.URL + "/_matrix/push/v1/notify" }

func httpPusher(url, pushKey string, data map[string]any) *mautrix.Pusher {
	kind := mautrix.PusherKindHTTP
	d := mautrix.PusherData{"url": url}
	for k, v := range data {
		d[k] = v
	}
	return &mautrix.Pusher{Kind: &kind, AppID: "im.example.app", PushKey: pushKey, AppDisplayName: "Example",
		DeviceDisplayName: "Bob's phone", Language: "en", ProfileTag: "tag", Data: d}
}

// allowLoopbackPush lets pushers reach the test gateways on loopback.
func allowLoopbackPush(c *config.Config) { c.Push.AllowedNetworks = []string{"127.0.0.0/8"} }

func TestPushers(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, allowLoopbackPush)
		srv.HS.Push.SetRetryPolicy(20*time.Millisecond, 100*time.Millisecond, time.Minute)
		gw := newGateway(t)
		alice, bob, carol := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol")
		if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
			t.Fatal(err)
		}
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Ops", RoomAliasName: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID
		for _, cli := range []*mautrix.Client{bob, carol} {
			if _, err := cli.JoinRoomByID(ctx, roomID); err != nil {
				t.Fatal(err)
			}
		}

		// Validation.
		bad := httpPusher(gw.srv.URL+"/notify", "k", nil)
		ephErrCode(t, bob.SetPusher(ctx, bad), "M_INVALID_PARAM", http.StatusBadRequest)
		bad = httpPusher(gw.url(), "k", map[string]any{"format": "full"})
		ephErrCode(t, bob.SetPusher(ctx, bad), "M_INVALID_PARAM", http.StatusBadRequest)
		email := mautrix.PusherKindEmail
		bad = httpPusher(gw.url(), "k", nil)
		bad.Kind = &email
		ephErrCode(t, bob.SetPusher(ctx, bad), "M_INVALID_PARAM", http.StatusBadRequest)
		_, err = rawRequest(bob, http.MethodPost, mautrix.ClientURLPath{"v3", "pushers", "set"}, nil, map[string]any{"kind": "http", "app_id": "a", "pushkey": "k"})
		ephErrCode(t, err, "M_MISSING_PARAM", http.StatusBadRequest)
		_, err = rawRequest(bob, http.MethodPost, mautrix.ClientURLPath{"v3", "pushers", "set"}, nil, map[string]any{"app_id": "a", "pushkey": "k"})
		ephErrCode(t, err, "M_MISSING_PARAM", http.StatusBadRequest)

		// A pusher with custom data, listed as set.
		if err := bob.SetPusher(ctx, httpPusher(gw.url(), "key1", map[string]any{"custom": "x"})); err != nil {
			t.Fatal(err)
		}
		pushers, err := bob.GetPushers(ctx)
		if err != nil || len(pushers.Pushers) != 1 || pushers.Pushers[0].Data.URL() != gw.url() || pushers.Pushers[0].Data["custom"] != "x" ||
			pushers.Pushers[0].ProfileTag != "tag" || *pushers.Pushers[0].Kind != mautrix.PusherKindHTTP {
			t.Fatalf("pushers = %+v, %v", pushers, err)
		}

		// A plain group message: the full notification.
		ephSend(t, bob, roomID, ephText("own messages are not pushed"))
		evt := ephSend(t, alice, roomID, ephText("deploy done"))
		n := gw.next(t)
		want := map[string]string{
			"event_id": string(evt), "room_id": string(roomID), "type": "m.room.message", "sender": string(alice.UserID),
			"sender_display_name": "Alice Liddell", "room_name": "Ops", "room_alias": "#ops:localhost", "prio": "low",
			"content.body": "deploy done", "devices.0.app_id": "im.example.app", "devices.0.pushkey": "key1",
			"devices.0.data.custom": "x", "counts.unread": "1",
		}
		for path, v := range want {
			if got := n.Get(path).String(); got != v {
				t.Errorf("notification %s = %q, want %q", path, got, v)
			}
		}
		if n.Get("devices.0.data.url").Exists() || n.Get("devices.0.pushkey_ts").Int() < time.Now().Add(-time.Minute).Unix() ||
			n.Get("counts.missed_calls").Exists() || n.Get("user_is_target").Exists() || len(n.Get("devices").Array()) != 1 {
			t.Errorf("notification = %s", n.Raw)
		}

		// A mention: high priority, the rule's tweaks; unread counts both.
		ephSend(t, alice, roomID, map[string]any{"msgtype": "m.text", "body": "bob?", "m.mentions": map[string]any{"user_ids": []id.UserID{bob.UserID}}})
		n = gw.next(t)
		if n.Get("prio").Str != "high" || n.Get("devices.0.tweaks.highlight").Type != gjson.True || n.Get("devices.0.tweaks.sound").Str != "default" ||
			n.Get("counts.unread").Int() != 2 {
			t.Fatalf("mention notification = %s", n.Raw)
		}

		// After a 500 the same notification is sent again.
		var failures int
		gw.setAnswer(func(gjson.Result) (int, string) {
			if failures < 2 {
				failures++
				return http.StatusInternalServerError, `{"errcode":"M_UNKNOWN"}`
			}
			return 200, `{"rejected":[]}`
		})
		evt = ephSend(t, alice, roomID, ephText("retry me"))
		for i := range 3 {
			if got := gw.next(t).Get("event_id").Str; got != string(evt) {
				t.Fatalf("attempt %d was for %s, want %s", i+1, got, evt)
			}
		}
		gw.quiet(t, 300*time.Millisecond)

		// An event_id_only pusher gets the IDs, counts and devices only.
		if err := bob.SetPusher(ctx, httpPusher(gw.url(), "key2", map[string]any{"format": "event_id_only"})); err != nil {
			t.Fatal(err)
		}
		evt = ephSend(t, alice, roomID, ephText("secret"))
		byKey := map[string]gjson.Result{}
		for range 2 {
			n := gw.next(t)
			byKey[n.Get("devices.0.pushkey").Str] = n
		}
		lean := byKey["key2"]
		if lean.Get("event_id").Str != string(evt) || lean.Get("room_id").Str != string(roomID) || lean.Get("counts.unread").Int() != 4 ||
			lean.Get("content").Exists() || lean.Get("sender").Exists() || lean.Get("type").Exists() || lean.Get("room_name").Exists() ||
			lean.Get("devices.0.data.format").Str != "event_id_only" {
			t.Fatalf("event_id_only notification = %s", lean.Raw)
		}
		if byKey["key1"].Get("content.body").Str != "secret" {
			t.Fatalf("full notification = %s", byKey["key1"].Raw)
		}
		// kind null deletes a pusher.
		del := httpPusher(gw.url(), "key2", nil)
		del.Kind = nil
		if err := bob.SetPusher(ctx, del); err != nil {
			t.Fatal(err)
		}

		// Reading sends the new count alone, for the phone's badge: no
		// event, no room. A receipt that leaves the count as it was sends
		// nothing.
		if err := bob.SendReceipt(ctx, roomID, evt, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		if b := gw.next(t); b.Get("event_id").Exists() || b.Get("room_id").Exists() || b.Get("type").Exists() ||
			!b.Get("counts.unread").Exists() || b.Get("counts.unread").Int() != 0 || b.Get("devices.0.pushkey").Str != "key1" ||
			b.Get("devices.0.data.custom").Str != "x" || b.Get("devices.0.data.url").Exists() {
			t.Fatalf("badge update = %s", b.Raw)
		}
		if err := bob.SendReceipt(ctx, roomID, evt, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		gw.quiet(t, 300*time.Millisecond)
		// Read notifications are not pushed.
		ephSend(t, alice, roomID, ephText("after reading"))
		if n := gw.next(t); n.Get("counts.unread").Int() != 1 {
			t.Fatalf("after a receipt: %s", n.Raw)
		}

		// A rejected pushkey deletes the pusher.
		gw.setAnswer(func(req gjson.Result) (int, string) { return 200, `{"rejected":["key1"]}` })
		ephSend(t, alice, roomID, ephText("to a dead phone"))
		gw.next(t)
		deadline := time.Now().Add(10 * time.Second)
		for {
			pushers, err := bob.GetPushers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(pushers.Pushers) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pushers after rejection: %+v", pushers.Pushers)
			}
			time.Sleep(20 * time.Millisecond)
		}
		ephSend(t, alice, roomID, ephText("nobody listens"))
		gw.quiet(t, 300*time.Millisecond)

		// append: without it, another user's pusher with the same app ID
		// and pushkey is replaced; with it, both stay.
		gw.setAnswer(func(gjson.Result) (int, string) { return 200, `{}` })
		if err := bob.SetPusher(ctx, httpPusher(gw.url(), "shared", nil)); err != nil {
			t.Fatal(err)
		}
		if err := carol.SetPusher(ctx, httpPusher(gw.url(), "shared", nil)); err != nil {
			t.Fatal(err)
		}
		if ps, _ := bob.GetPushers(ctx); len(ps.Pushers) != 0 {
			t.Fatalf("bob's pusher survived carol's without append: %+v", ps.Pushers)
		}
		appended := httpPusher(gw.url(), "shared", nil)
		appended.Append = true
		if err := bob.SetPusher(ctx, appended); err != nil {
			t.Fatal(err)
		}
		for _, cli := range []*mautrix.Client{bob, carol} {
			if ps, _ := cli.GetPushers(ctx); len(ps.Pushers) != 1 {
				t.Fatalf("%s has %d pushers after append", cli.UserID, len(ps.Pushers))
			}
		}
		ephSend(t, alice, roomID, ephText("to both"))
		got := map[string]bool{gw.next(t).Get("sender").Str: true}
		gw.next(t)
		if !got[string(alice.UserID)] {
			t.Fatal("not from alice")
		}

		// Delivery survives a restart: a notification the gateway failed
		// to take is sent by the next process.
		gw.setAnswer(func(gjson.Result) (int, string) { return http.StatusBadGateway, `` })
		evt = ephSend(t, alice, roomID, ephText("across a restart"))
		gw.next(t)
		gw.next(t)
		srv.Stop()
		gw.setAnswer(func(gjson.Result) (int, string) { return 200, `{}` })
		for len(gw.ch) > 0 {
			<-gw.ch
		}
		srv = srv.StartAgain()
		for range 2 {
			if n := gw.next(t); n.Get("event_id").Str != string(evt) {
				t.Fatalf("after restart the gateway got %s", n.Raw)
			}
		}
	})
}

// TestPushConfig: push.allowed_networks takes CIDRs and addresses, names
// itself when an entry is neither, and survives the generated file.
func TestPushConfig(t *testing.T) {
	for yaml, key := range map[string]string{
		"push: {allowed_networks: [intranet]}":           "push.allowed_networks[0]",
		"push: {allowed_networks: [10.0.0.0/8, 10.0.0]}": "push.allowed_networks[1]",
		"push: {allowed_networks: 10.0.0.0/8}":           "allowed_networks",
		"push: {gateways: []}":                           `unknown key "gateways"`,
	} {
		if _, err := config.Parse([]byte(yaml)); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: want an error naming %s, got %v", yaml, key, err)
		}
	}
	cfg, err := config.Parse(nil)
	if err != nil || len(cfg.Push.AllowedNetworks) != 0 {
		t.Fatalf("defaults: %+v, %v", cfg.Push, err)
	}
	cfg.Push.AllowedNetworks = []string{"10.0.0.7/32", "fd00::1"}
	data, err := cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse(data)
	if err != nil || !slices.Equal(back.Push.AllowedNetworks, cfg.Push.AllowedNetworks) {
		t.Fatalf("push section after the round trip: %+v, %v\n%s", back.Push, err, data)
	}
}

// TestPushersRefuseInternalGateways: without push.allowed_networks, a
// pusher may not reach the server's own network. A URL with a non-public
// IP address is refused when it is set, naming the key that would allow
// it; one with a host name that resolves to loopback is accepted, but
// nothing reaches the gateway; a public address is accepted.
func TestPushersRefuseInternalGateways(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		gw := newGateway(t)
		port := gw.srv.Listener.Addr().(*net.TCPAddr).Port
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		roomID := ephRoom(t, alice, bob)

		for _, host := range []string{"127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "10.0.0.7", "169.254.169.254", "100.64.0.1", "[fe80::1%25eth0]"} {
			u := fmt.Sprintf("http://%s:%d%s", host, port, push.NotifyPath)
			err := bob.SetPusher(ctx, httpPusher(u, "k-"+host, nil))
			ephErrCode(t, err, "M_INVALID_PARAM", http.StatusBadRequest)
			if err == nil || !strings.Contains(err.Error(), "push.allowed_networks") {
				t.Errorf("%s: %v, want an error naming push.allowed_networks", u, err)
			}
		}
		if ps, err := bob.GetPushers(ctx); err != nil || len(ps.Pushers) != 0 {
			t.Fatalf("pushers after refusals: %+v, %v", ps, err)
		}
		// A public address is accepted (and deleted before anything is
		// sent to it).
		public := "https://93.184.215.14" + push.NotifyPath
		if err := bob.SetPusher(ctx, httpPusher(public, "public", nil)); err != nil {
			t.Fatalf("public gateway: %v", err)
		}
		del := httpPusher(public, "public", nil)
		del.Kind = nil
		if err := bob.SetPusher(ctx, del); err != nil {
			t.Fatal(err)
		}

		// localhost passes at set time; its delivery is refused on the
		// address dialled, for good: no request reaches the gateway, one
		// warning per notification, no retries, and the pusher stays. A
		// worker of our own (with the default, guarded client) shows its
		// log.
		srv.HS.Push.Stop()
		lines := logLines(make(chan string, 1000))
		w := push.NewService(srv.HS.DB, srv.HS.Rooms, srv.HS.Notifier, srv.Config.ServerName, zerolog.New(lines).Level(zerolog.WarnLevel), nil)
		w.SetRetryPolicy(20*time.Millisecond, 100*time.Millisecond, time.Minute)
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
		local := fmt.Sprintf("http://localhost:%d%s", port, push.NotifyPath)
		if err := bob.SetPusher(ctx, httpPusher(local, "local", nil)); err != nil {
			t.Fatalf("pusher on localhost: %v", err)
		}
		// refused waits for one warning naming the key, then makes sure no
		// other follows (a retry would log again).
		refused := func() {
			t.Helper()
			deadline := time.After(10 * time.Second)
			for found := false; !found; {
				select {
				case line := <-lines:
					found = strings.Contains(line, "push.allowed_networks")
				case <-deadline:
					t.Fatal("no warning that the gateway's address was refused")
				}
			}
			gw.quiet(t, 500*time.Millisecond)
			for len(lines) > 0 {
				if line := <-lines; strings.Contains(line, "push.allowed_networks") {
					t.Fatalf("refused again: %s", line)
				}
			}
		}
		ephSend(t, alice, roomID, ephText("to loopback"))
		refused()
		if ps, err := bob.GetPushers(ctx); err != nil || len(ps.Pushers) != 1 {
			t.Fatalf("pushers after a refused delivery: %+v, %v", ps, err)
		}
		ephSend(t, alice, roomID, ephText("again"))
		refused()
	})
}

// logLines receives a zerolog logger's lines (one Write each).
type logLines chan string

func (l logLines) Write(p []byte) (int, error) {
	select {
	case l <- string(p):
	default: // full: the test has what it needs
	}
	return len(p), nil
}

// TestPushMembershipAtEvent checks that the worker takes membership at the
// event, not at the time it gets to it: with the worker stopped, a user
// who joins after a message is not notified of it and one who leaves
// after it is; a new worker then resumes where the old one stopped.
func TestPushMembershipAtEvent(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob, carol, dave := srv.NewUser("alice"), srv.NewUser("bob"), srv.NewUser("carol"), srv.NewUser("dave")
		roomID := ephRoom(t, alice, bob, carol)
		srv.HS.Push.Stop()

		before := ephSend(t, alice, roomID, ephText("before"))
		if _, err := dave.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		after := ephSend(t, alice, roomID, ephText("after"))

		w := push.NewService(srv.HS.DB, srv.HS.Rooms, srv.HS.Notifier, srv.Config.ServerName, zerolog.Nop(), nil)
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Stop)
		if got := waitNotifications(t, bob, 2).Get("notifications.#.event.event_id").Raw; got != `["`+string(after)+`","`+string(before)+`"]` {
			t.Fatalf("bob's notifications %s", got)
		}
		for user, want := range map[*mautrix.Client]id.EventID{carol: before, dave: after} {
			got := pushNotifications(t, user, nil).Get("notifications.#.event.event_id").Raw
			if got != `["`+string(want)+`"]` {
				t.Errorf("%s's notifications %s, want only %s", user.UserID, got, want)
			}
		}
	})
}
