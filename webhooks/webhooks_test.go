package webhooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/loopback"
	"github.com/switchboard-im/switchboard/internal/testdb"
	"github.com/switchboard-im/switchboard/webhooks"
)

func TestMain(m *testing.M) { testdb.Main(m) }

const wait = 15 * time.Second

// startWebhooks runs the webhook bridge against the kit's homeserver.
func startWebhooks(t *testing.T, kit *testkit.Kit, configure func(*webhooks.Config)) *webhooks.Service {
	t.Helper()
	cfg := &webhooks.Config{Config: *kit.FrameworkConfig("webhooks")}
	addr, err := loopback.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HooksListen = addr
	cfg.Outgoing.AllowPrivateTargets = true // the test receivers are on loopback
	if configure != nil {
		configure(cfg)
	}
	return runWebhooks(t, kit, cfg)
}

func runWebhooks(t *testing.T, kit *testkit.Kit, cfg *webhooks.Config) *webhooks.Service {
	t.Helper()
	svc, err := webhooks.New(context.Background(), cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	kit.RegisterAppservice(svc.AS.Registration)
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	return svc
}

// room makes a room of alice's with the webhook bot in it.
func room(t *testing.T, kit *testkit.Kit, alice *mautrix.Client, svc *webhooks.Service) id.RoomID {
	t.Helper()
	resp, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{Name: "ops", Invite: []id.UserID{svc.Config.BotID()}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitForJoin(t, alice, resp.RoomID, svc.Config.BotID(), wait)
	return resp.RoomID
}

func send(t *testing.T, cli *mautrix.Client, room id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := cli.SendText(context.Background(), room, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

func bodyContains(s string) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		return evt.Type == event.EventMessage && strings.Contains(strings.ReplaceAll(evt.Content.AsMessage().Body, "**", ""), s)
	}
}

// privateMessage joins the direct chat the bot invited cli to and returns
// the first message in it that contains want.
func privateMessage(t *testing.T, cli *mautrix.Client, bot id.UserID, want string) string {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(wait)
	for {
		resp, err := cli.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		for roomID := range resp.Rooms.Invite {
			if _, err := cli.JoinRoomByID(ctx, roomID); err != nil {
				t.Fatal(err)
			}
		}
		for roomID := range resp.Rooms.Join {
			if m, err := cli.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50); err == nil {
				for _, evt := range m.Chunk {
					if evt.Sender != bot || evt.Type != event.EventMessage {
						continue
					}
					_ = evt.Content.ParseRaw(evt.Type)
					if body := strings.ReplaceAll(evt.Content.AsMessage().Body, "**", ""); strings.Contains(body, want) {
						return body
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s got no private message containing %q from %s", cli.UserID, want, bot)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var hookURLRE = regexp.MustCompile(`http://[^\s` + "`" + `]+/hooks/[A-Za-z0-9]+`)

// newHook creates a hook with the command and returns its URL (from the
// private message).
func newHook(t *testing.T, svc *webhooks.Service, alice *mautrix.Client, room id.RoomID, name string) string {
	t.Helper()
	send(t, alice, room, "!webhook new "+name)
	testkit.WaitForEvent(t, alice, room, bodyContains("Created webhook "+name), wait)
	return hookURL(t, privateMessage(t, alice, svc.Config.BotID(), "webhook "+name+" in "+string(room)))
}

func hookURL(t *testing.T, text string) string {
	t.Helper()
	u := hookURLRE.FindString(text)
	if u == "" {
		t.Fatalf("no hook URL in %q", text)
	}
	return u
}

// post sends a request body to a hook and returns the status and body.
func post(t *testing.T, url, contentType, body string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Header
}

// TestIncomingFormats: a moderator creates a hook with the command, gets
// its URL privately, and each format posted to it shows up in the room
// from a sender named as the payload asks.
func TestIncomingFormats(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		ctx := context.Background()
		kit := testkit.Start(t, testkit.WithDatabase(uri))
		svc := startWebhooks(t, kit, nil)
		alice := kit.NewUser("alice")
		r := room(t, kit, alice, svc)
		url := newHook(t, svc, alice, r, "alerts")

		// Slack: mrkdwn, username and a room mention.
		status, body, _ := post(t, url, "application/json", `{"text": "*Deploy* of <https://ci.example/42|build 42> done <!here>", "username": "CI"}`, nil)
		if status != 200 || body != "ok" {
			t.Fatalf("Slack post: HTTP %d %q", status, body)
		}
		evt := testkit.WaitForEvent(t, alice, r, bodyContains("build 42"), wait)
		msg := evt.Content.AsMessage()
		if !strings.Contains(msg.FormattedBody, "<strong>Deploy</strong>") || !strings.Contains(msg.FormattedBody, `href="https://ci.example/42"`) {
			t.Errorf("Slack message HTML = %q", msg.FormattedBody)
		}
		if msg.Mentions == nil || !msg.Mentions.Room {
			t.Errorf("<!here> did not mention the room: %+v", msg.Mentions)
		}
		if dn, err := alice.GetDisplayName(ctx, evt.Sender); err != nil || dn.DisplayName != "CI" {
			t.Errorf("sender %s is named %+v (%v), want CI", evt.Sender, dn, err)
		}
		// Form-encoded, as Slack's own clients send it.
		status, _, _ = post(t, url, "application/x-www-form-urlencoded", "payload="+`%7B%22text%22%3A%22form%20post%22%7D`, nil)
		if status != 200 {
			t.Fatalf("form post: HTTP %d", status)
		}
		testkit.WaitForEvent(t, alice, r, bodyContains("form post"), wait)

		// matrix-appservice-webhooks: a notice from "Nagios".
		status, _, _ = post(t, url, "application/json", `{"text": "disk <b>full</b>", "format": "html", "displayName": "Nagios", "msgtype": "notice"}`, nil)
		if status != 200 {
			t.Fatalf("appservice-webhooks post: HTTP %d", status)
		}
		evt = testkit.WaitForEvent(t, alice, r, bodyContains("disk full"), wait)
		if msg := evt.Content.AsMessage(); msg.MsgType != event.MsgNotice || !strings.Contains(msg.FormattedBody, "<b>full</b>") {
			t.Errorf("appservice-webhooks message = %s %q", msg.MsgType, msg.FormattedBody)
		}
		if dn, _ := alice.GetDisplayName(ctx, evt.Sender); dn == nil || dn.DisplayName != "Nagios" {
			t.Errorf("appservice-webhooks sender named %+v, want Nagios", dn)
		}

		// Alertmanager: the resolution replies to the firing message.
		firing := alertmanagerPayload("firing")
		if status, _, _ := post(t, url, "application/json", firing, nil); status != 200 {
			t.Fatalf("alertmanager firing: HTTP %d", status)
		}
		fired := testkit.WaitForEvent(t, alice, r, bodyContains("DiskFull"), wait)
		if status, _, _ := post(t, url, "application/json", alertmanagerPayload("resolved"), nil); status != 200 {
			t.Fatalf("alertmanager resolved: HTTP %d", status)
		}
		resolved := testkit.WaitForEvent(t, alice, r, func(evt *event.Event) bool {
			return bodyContains("DiskFull")(evt) && evt.ID != fired.ID
		}, wait)
		if to := resolved.Content.AsMessage().RelatesTo.GetReplyTo(); to != fired.ID {
			t.Errorf("resolved alert replies to %q, want the firing message %s", to, fired.ID)
		}

		// Grafana's contact point (its documented example payload).
		grafana, err := os.ReadFile("render/testdata/grafana-firing.json")
		if err != nil {
			t.Fatal(err)
		}
		if status, _, _ := post(t, url, "application/json", string(grafana), nil); status != 200 {
			t.Fatalf("grafana: HTTP %d", status)
		}
		evt = testkit.WaitForEvent(t, alice, r, bodyContains("triggered for zone eu-1"), wait)
		if msg := evt.Content.AsMessage(); !strings.Contains(msg.FormattedBody, "High memory usage") || !strings.Contains(msg.FormattedBody, "href=") {
			t.Errorf("grafana message HTML = %q", msg.FormattedBody)
		}

		// Generic JSON through the hook's template.
		send(t, alice, r, "!webhook template alerts Build {{.build.id}} is **{{.build.status}}**")
		testkit.WaitForEvent(t, alice, r, bodyContains("Template of alerts updated"), wait)
		if status, _, _ := post(t, url, "application/json", `{"build": {"id": 7, "status": "green", "duration": 12.5}}`, nil); status != 200 {
			t.Fatalf("templated post: HTTP %d", status)
		}
		evt = testkit.WaitForEvent(t, alice, r, bodyContains("Build 7 is"), wait)
		if msg := evt.Content.AsMessage(); !strings.Contains(msg.FormattedBody, "<strong>green</strong>") {
			t.Errorf("templated message HTML = %q", msg.FormattedBody)
		}
	})
}

func alertmanagerPayload(status string) string {
	return fmt.Sprintf(`{
  "version": "4", "groupKey": "{}:{alertname=\"DiskFull\"}", "truncatedAlerts": 0, "status": %q,
  "receiver": "matrix", "groupLabels": {"alertname": "DiskFull"},
  "commonLabels": {"alertname": "DiskFull", "severity": "critical", "instance": "db1:9100"},
  "commonAnnotations": {"summary": "Disk almost full on db1"},
  "externalURL": "http://alertmanager.example:9093",
  "alerts": [{"status": %q, "labels": {"alertname": "DiskFull", "severity": "critical", "instance": "db1:9100"},
    "annotations": {"summary": "Disk almost full on db1", "description": "97.5%% used"},
    "startsAt": "2026-11-25T01:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus.example:9090/graph?g0.expr=disk", "fingerprint": "abc123"}]
}`, status, status)
}

// TestIncomingRefusals: unknown, revoked and rotated-away hooks answer 404;
// bad bodies 400; big ones 413; fast callers 429 with Retry-After; signed
// hooks refuse unsigned and wrongly signed requests.
func TestIncomingRefusals(t *testing.T) {
	kit := testkit.Start(t)
	svc := startWebhooks(t, kit, func(c *webhooks.Config) {
		c.MaxBodySize = 4096
		c.RateLimits.PerHook = webhooks.RateLimit{PerSecond: 5, Burst: 3}
	})
	alice := kit.NewUser("alice")
	r := room(t, kit, alice, svc)
	url := newHook(t, svc, alice, r, "ci")

	for _, c := range []struct {
		name, url, body string
		status          int
		answer          string
	}{
		{"unknown hook", svc.HookURL("notarealhooksecret0123456789abcd"), `{"text":"x"}`, 404, "no_service"},
		{"bad JSON", url, `{"text": `, 400, "invalid_payload"},
		{"no text", url, `{"text": "", "username": "x"}`, 400, "no_text"},
		{"too large", url, `{"text": "` + strings.Repeat("a", 5000) + `"}`, 413, "request_too_large"},
	} {
		status, answer, _ := post(t, c.url, "application/json", c.body, nil)
		if status != c.status || answer != c.answer {
			t.Errorf("%s: HTTP %d %q, want %d %q", c.name, status, answer, c.status, c.answer)
		}
	}
	// The burst is used up by now (three refused requests counted): the next is refused.
	status, answer, header := post(t, url, "application/json", `{"text":"too fast"}`, nil)
	if status != 429 || answer != "rate_limited" || header.Get("Retry-After") == "" {
		t.Errorf("over the limit: HTTP %d %q Retry-After %q", status, answer, header.Get("Retry-After"))
	}
	time.Sleep(700 * time.Millisecond) // the bucket fills again

	// Signed requests only.
	send(t, alice, r, "!webhook sign ci")
	testkit.WaitForEvent(t, alice, r, bodyContains("signed requests only"), wait)
	secret := regexp.MustCompile("`([A-Za-z0-9]{40})`").FindStringSubmatch(privateMessage(t, alice, svc.Config.BotID(), "signing secret of webhook ci"))
	if secret == nil {
		t.Fatal("no signing secret in the private message")
	}
	body := `{"text": "signed and sealed"}`
	mac := hmac.New(sha256.New, []byte(secret[1]))
	mac.Write([]byte(body))
	good := http.Header{"X-Signature-256": {"sha256=" + hex.EncodeToString(mac.Sum(nil))}}
	if status, answer, _ := post(t, url, "application/json", body, nil); status != 401 || answer != "invalid_signature" {
		t.Errorf("unsigned request to a signed hook: HTTP %d %q", status, answer)
	}
	bad := http.Header{"X-Signature-256": {"sha256=" + strings.Repeat("00", 32)}}
	if status, _, _ := post(t, url, "application/json", body, bad); status != 401 {
		t.Errorf("wrongly signed request: HTTP %d", status)
	}
	if status, answer, _ := post(t, url, "application/json", body, good); status != 200 {
		t.Fatalf("signed request: HTTP %d %q", status, answer)
	}
	testkit.WaitForEvent(t, alice, r, bodyContains("signed and sealed"), wait)

	// Rotate: the old URL is dead, the new one works; revoke kills it.
	send(t, alice, r, "!webhook rotate ci")
	newURL := hookURL(t, privateMessage(t, alice, svc.Config.BotID(), "new URL of webhook ci"))
	if status, _, _ := post(t, url, "application/json", body, good); status != 404 {
		t.Errorf("old URL after rotate: HTTP %d, want 404", status)
	}
	time.Sleep(400 * time.Millisecond) // the bucket (5 a second) has a token again
	if status, _, _ := post(t, newURL, "application/json", body, good); status != 200 {
		t.Errorf("new URL after rotate: HTTP %d", status)
	}
	send(t, alice, r, "!webhook revoke ci")
	testkit.WaitForEvent(t, alice, r, bodyContains("Deleted webhook ci"), wait)
	if status, answer, _ := post(t, newURL, "application/json", body, good); status != 404 || answer != "no_service" {
		t.Errorf("revoked hook: HTTP %d %q", status, answer)
	}

	// Someone without power in the room may not create hooks.
	bob := kit.NewUser("bob")
	if _, err := alice.InviteUser(context.Background(), r, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	send(t, bob, r, "!webhook new mine")
	testkit.WaitForEvent(t, alice, r, bodyContains("needs power level 50"), wait)
}

// TestHomeserverDown: messages accepted while the homeserver is down
// arrive, in order and once each, when it is back.
func TestHomeserverDown(t *testing.T) {
	kit := testkit.Start(t)
	svc := startWebhooks(t, kit, nil)
	alice := kit.NewUser("alice")
	r := room(t, kit, alice, svc)
	url := newHook(t, svc, alice, r, "queue")
	if status, _, _ := post(t, url, "application/json", `{"text": "before"}`, nil); status != 200 {
		t.Fatal("post before")
	}
	testkit.WaitForEvent(t, alice, r, bodyContains("before"), wait)

	kit.StopHomeserver()
	const n = 20
	for i := range n {
		if status, answer, _ := post(t, url, "application/json", fmt.Sprintf(`{"text": "while down %02d"}`, i), nil); status != 200 {
			t.Fatalf("post %d while the homeserver is down: HTTP %d %q", i, status, answer)
		}
	}
	time.Sleep(1500 * time.Millisecond) // the worker fails and backs off meanwhile
	kit.StartHomeserver()
	last := testkit.WaitForEvent(t, alice, r, bodyContains(fmt.Sprintf("while down %02d", n-1)), 30*time.Second)

	resp, err := alice.Messages(context.Background(), r, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(resp.Chunk) - 1; i >= 0; i-- {
		evt := resp.Chunk[i]
		_ = evt.Content.ParseRaw(evt.Type)
		if body := evt.Content.AsMessage().Body; evt.Type == event.EventMessage && strings.HasPrefix(body, "while down") {
			got = append(got, body)
		}
	}
	if len(got) != n {
		t.Fatalf("%d messages arrived (last %s), want %d exactly once: %q", len(got), last.ID, n, got)
	}
	for i, body := range got {
		if want := fmt.Sprintf("while down %02d", i); body != want {
			t.Errorf("message %d is %q, want %q (order)", i, body, want)
		}
	}
}

// TestOutgoing: an outgoing hook POSTs matching messages, signed, to a
// receiver whose answer is posted back; a failing receiver is retried.
func TestOutgoing(t *testing.T) {
	kit := testkit.Start(t)
	svc := startWebhooks(t, kit, nil)
	alice := kit.NewUser("alice")
	r := room(t, kit, alice, svc)

	var mu sync.Mutex
	var got []map[string]any
	var signatures []string
	var bodies [][]byte
	failures := 1
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		var p map[string]any
		_ = json.Unmarshal(body, &p)
		got = append(got, p)
		signatures = append(signatures, req.Header.Get("X-Signature-256"))
		bodies = append(bodies, body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"text": "Deploying **%s**"}`, strings.TrimPrefix(p["body"].(string), "!deploy "))
	}))
	defer receiver.Close()

	send(t, alice, r, "!webhook outgoing add "+receiver.URL+" prefix=!deploy")
	testkit.WaitForEvent(t, alice, r, bodyContains("sends this room's messages to"), wait)
	secret := regexp.MustCompile("`([A-Za-z0-9]{40})`").FindStringSubmatch(privateMessage(t, alice, svc.Config.BotID(), "signs each request"))
	if secret == nil {
		t.Fatal("no secret in the private message")
	}
	send(t, alice, r, "just chatting")
	deploy := send(t, alice, r, "!deploy prod")
	answer := testkit.WaitForEvent(t, alice, r, bodyContains("Deploying prod"), 20*time.Second)
	if to := answer.Content.AsMessage().RelatesTo.GetReplyTo(); to != deploy {
		t.Errorf("the answer replies to %q, want %s", to, deploy)
	}
	if !strings.Contains(answer.Content.AsMessage().FormattedBody, "<strong>prod</strong>") {
		t.Errorf("answer HTML = %q", answer.Content.AsMessage().FormattedBody)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0]["body"] != "!deploy prod" || got[0]["event_id"] != string(deploy) || got[0]["sender"] != string(alice.UserID) {
		t.Fatalf("receiver got %v, want only the !deploy message", got)
	}
	mac := hmac.New(sha256.New, []byte(secret[1]))
	mac.Write(bodies[0])
	if want := "sha256=" + hex.EncodeToString(mac.Sum(nil)); signatures[0] != want {
		t.Errorf("signature %q, want %q", signatures[0], want)
	}
}

// TestProvisioning: an integration manager creates, lists, rotates and
// deletes a room's hooks for a moderator.
func TestProvisioning(t *testing.T) {
	kit := testkit.Start(t)
	const secret = "provisioning-secret-for-the-test-0123"
	svc := startWebhooks(t, kit, func(c *webhooks.Config) { c.Provisioning.SharedSecret = secret })
	alice, bob := kit.NewUser("alice"), kit.NewUser("bob")
	r := room(t, kit, alice, svc)
	base := "http://" + svc.Config.HooksListen + "/_switchboard/webhooks/v1/rooms/" + string(r) + "/hooks"
	call := func(method, url string, user id.UserID, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, url+"?user_id="+string(user), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	status, out := call("POST", base, alice.UserID, `{"name": "grafana"}`)
	if status != 200 || out["url"] == nil {
		t.Fatalf("create: HTTP %d %v", status, out)
	}
	url := out["url"].(string)
	if status, _ := call("POST", base, alice.UserID, `{"name": "grafana"}`); status != 409 {
		t.Errorf("second create: HTTP %d, want 409", status)
	}
	if status, out := call("POST", base, bob.UserID, `{"name": "bobs"}`); status != 403 {
		t.Errorf("create by a user without power: HTTP %d %v", status, out)
	}
	if status, out := call("GET", base, alice.UserID, ""); status != 200 || len(out["hooks"].([]any)) != 1 {
		t.Errorf("list: HTTP %d %v", status, out)
	}
	status, out = call("POST", base+"/grafana/rotate", alice.UserID, "")
	if status != 200 || out["url"] == url {
		t.Fatalf("rotate: HTTP %d %v", status, out)
	}
	if status, _, _ := post(t, url, "application/json", `{"text":"old"}`, nil); status != 404 {
		t.Errorf("old URL after rotate: HTTP %d", status)
	}
	if status, _, _ := post(t, out["url"].(string), "application/json", `{"text":"provisioned hook works"}`, nil); status != 200 {
		t.Errorf("new URL: HTTP %d", status)
	}
	testkit.WaitForEvent(t, alice, r, bodyContains("provisioned hook works"), wait)
	if status, _ := call("DELETE", base+"/grafana", alice.UserID, ""); status != 200 {
		t.Errorf("delete: HTTP %d", status)
	}
	if status, _ := call("DELETE", base+"/grafana", alice.UserID, ""); status != 404 {
		t.Errorf("second delete: HTTP %d, want 404", status)
	}
}

// TestExpiryAndAvatars: a hook created to expire stops working when it
// does; a sender's avatar URL is uploaded once and shown on its ghost.
func TestExpiryAndAvatars(t *testing.T) {
	ctx := context.Background()
	kit := testkit.Start(t)
	const secret = "provisioning-secret-for-the-test-0123"
	svc := startWebhooks(t, kit, func(c *webhooks.Config) { c.Provisioning.SharedSecret = secret })
	alice := kit.NewUser("alice")
	r := room(t, kit, alice, svc)

	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
	var fetches int
	var mu sync.Mutex
	icons := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		fetches++
		mu.Unlock()
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(png)
	}))
	defer icons.Close()

	req, _ := http.NewRequest("POST", "http://"+svc.Config.HooksListen+"/_switchboard/webhooks/v1/rooms/"+string(r)+"/hooks?user_id="+string(alice.UserID),
		strings.NewReader(`{"name": "short-lived", "expires_in_seconds": 2}`))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		URL  string `json:"url"`
		Hook struct {
			ExpiresAt int64 `json:"expires_at"`
		} `json:"hook"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != 200 || created.Hook.ExpiresAt == 0 {
		t.Fatalf("create an expiring hook: HTTP %d %+v", resp.StatusCode, created)
	}
	for i := range 2 {
		body := fmt.Sprintf(`{"text": "with avatar %d", "username": "Grafana", "icon_url": %q}`, i, icons.URL+"/grafana.png")
		if status, answer, _ := post(t, created.URL, "application/json", body, nil); status != 200 {
			t.Fatalf("post %d: HTTP %d %q", i, status, answer)
		}
	}
	evt := testkit.WaitForEvent(t, alice, r, bodyContains("with avatar 1"), wait)
	avatar, err := alice.GetAvatarURL(ctx, evt.Sender)
	if err != nil || avatar.IsEmpty() {
		t.Errorf("the sender %s has no avatar: %v %v", evt.Sender, avatar, err)
	} else if data, err := alice.DownloadBytes(ctx, avatar); err != nil || string(data) != string(png) {
		t.Errorf("the avatar is not the icon: %d bytes, %v", len(data), err)
	}
	mu.Lock()
	if fetches != 1 {
		t.Errorf("the icon was fetched %d times for two messages, want once", fetches)
	}
	mu.Unlock()

	// A sender name too long for a user ID still gets a ghost with that name.
	long := strings.Repeat("漢", 100)
	if status, answer, _ := post(t, created.URL, "application/json", `{"text": "long name", "username": "`+long+`"}`, nil); status != 200 {
		t.Fatalf("long name: HTTP %d %q", status, answer)
	}
	evt = testkit.WaitForEvent(t, alice, r, bodyContains("long name"), wait)
	if dn, err := alice.GetDisplayName(ctx, evt.Sender); err != nil || !strings.HasPrefix(dn.DisplayName, long[:60]) || len(evt.Sender) > 255 {
		t.Errorf("long-named sender %s (%d bytes) is named %v (%v)", evt.Sender, len(evt.Sender), dn, err)
	}

	time.Sleep(time.Until(time.UnixMilli(created.Hook.ExpiresAt)) + 100*time.Millisecond)
	if status, answer, _ := post(t, created.URL, "application/json", `{"text": "too late"}`, nil); status != 404 || answer != "no_service" {
		t.Errorf("expired hook: HTTP %d %q, want 404 no_service", status, answer)
	}
}

// TestOutgoingDeadLetters: a receiver that keeps failing gets max_attempts
// tries, then the delivery is kept in the dead letters, and a private
// target is refused unless allowed.
func TestOutgoingDeadLetters(t *testing.T) {
	kit := testkit.Start(t)
	svc := startWebhooks(t, kit, func(c *webhooks.Config) { c.Outgoing.MaxAttempts = 2 })
	alice := kit.NewUser("alice")
	r := room(t, kit, alice, svc)
	var mu sync.Mutex
	attempts := 0
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		attempts++
		mu.Unlock()
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	defer receiver.Close()
	send(t, alice, r, "!webhook outgoing add "+receiver.URL)
	testkit.WaitForEvent(t, alice, r, bodyContains("sends this room's messages to"), wait)
	send(t, alice, r, "into the void")
	deadline := time.Now().Add(wait)
	var dead int
	for dead == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if err := svc.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM webhook_dead_letters`).Scan(&dead); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if dead != 1 || attempts != 2 {
		t.Errorf("%d dead letters after %d attempts, want 1 after 2", dead, attempts)
	}

	// With private targets refused (the default), a loopback receiver is
	// never contacted.
	kit2 := testkit.Start(t)
	strict := startWebhooks(t, kit2, func(c *webhooks.Config) {
		c.Outgoing.AllowPrivateTargets = false
		c.Outgoing.MaxAttempts = 1
	})
	bob := kit2.NewUser("bob")
	r2 := room(t, kit2, bob, strict)
	send(t, bob, r2, "!webhook outgoing add "+receiver.URL)
	testkit.WaitForEvent(t, bob, r2, bodyContains("sends this room's messages to"), wait)
	before := attempts
	mu.Unlock()
	send(t, bob, r2, "to loopback")
	dead = 0
	for deadline := time.Now().Add(wait); dead == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var msg string
		err := strict.DB.QueryRow(context.Background(), `SELECT COUNT(*), COALESCE(MAX(error), '') FROM webhook_dead_letters`).Scan(&dead, &msg)
		if err != nil {
			t.Fatal(err)
		}
		if dead > 0 && !strings.Contains(msg, "allow_private_targets") {
			t.Errorf("dead letter error %q does not say why", msg)
		}
	}
	mu.Lock()
	if dead != 1 || attempts != before {
		t.Errorf("private target: %d dead letters, receiver hit %d times, want 1 and none", dead, attempts-before)
	}
}

// TestResolvedAlertEdits: with resolved_alerts: edit, the resolution
// replaces the firing message instead of replying to it.
func TestResolvedAlertEdits(t *testing.T) {
	kit := testkit.Start(t)
	svc := startWebhooks(t, kit, func(c *webhooks.Config) { c.ResolvedAlerts = "edit" })
	alice := kit.NewUser("alice")
	r := room(t, kit, alice, svc)
	url := newHook(t, svc, alice, r, "am")
	if status, _, _ := post(t, url, "application/json", alertmanagerPayload("firing"), nil); status != 200 {
		t.Fatal("firing")
	}
	fired := testkit.WaitForEvent(t, alice, r, bodyContains("DiskFull"), wait)
	if status, _, _ := post(t, url, "application/json", alertmanagerPayload("resolved"), nil); status != 200 {
		t.Fatal("resolved")
	}
	edit := testkit.WaitForEvent(t, alice, r, func(evt *event.Event) bool {
		return evt.Type == event.EventMessage && evt.Content.AsMessage().RelatesTo.GetReplaceID() == fired.ID
	}, wait)
	if c := edit.Content.AsMessage(); c.NewContent == nil || !strings.Contains(c.NewContent.Body, "RESOLVED") || edit.Sender != fired.Sender {
		t.Errorf("the edit from %s (firing from %s) has new content %+v", edit.Sender, fired.Sender, c.NewContent)
	}
}
