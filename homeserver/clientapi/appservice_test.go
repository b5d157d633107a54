package clientapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

const (
	asToken = "as-token-0123456789abcdef"
	hsToken = "hs-token-0123456789abcdef"
)

// withBridge registers an appservice "bridge" owning @bridge_*, reachable at url.
func withBridge(t *testing.T, url string) func(*config.Config) {
	return withBridgeOptions(t, url, "")
}

// withBridgeOptions is withBridge with more top-level registration keys.
func withBridgeOptions(t *testing.T, url, extra string) func(*config.Config) {
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	reg := extra + fmt.Sprintf(`id: bridge
url: %q
as_token: %s
hs_token: %s
sender_localpart: bridgebot
rate_limited: false
protocols: [irc]
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*"
  aliases:
    - exclusive: true
      regex: "#bridge_.*"
`, url, asToken, hsToken)
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) {
		c.AppserviceRegistrations = []string{path}
		c.Registration.Mode = config.RegistrationOpen
	}
}

// asClient returns a client using the appservice's token, masquerading as user.
func asClient(t *testing.T, srv *hstest.Server, user id.UserID) *mautrix.Client {
	cli := srv.Client()
	cli.AccessToken = asToken
	cli.UserID = user
	cli.SetAppServiceUserID = user != ""
	return cli
}

func TestAppserviceAuthAndMasquerading(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, withBridge(t, ""))
		// The sender exists from the start.
		bot := asClient(t, srv, "")
		who, err := bot.Whoami(ctx)
		if err != nil || who.UserID != "@bridgebot:localhost" {
			t.Fatalf("whoami as the appservice = %+v, %v", who, err)
		}
		// Register a ghost without a password.
		resp, _, err := bot.Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_alice", Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
		if err != nil || resp.UserID != "@bridge_alice:localhost" {
			t.Fatalf("appservice registration = %+v, %v", resp, err)
		}
		// Outside the namespace: refused.
		_, _, err = bot.Register(ctx, &mautrix.ReqRegister[any]{Username: "mallory", Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
		mustErr(t, err, mautrix.MExclusive, http.StatusBadRequest)
		// Ordinary users may not take exclusive names.
		_, err = srv.Client().RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "bridge_bob", Password: pw})
		mustErr(t, err, mautrix.MExclusive, http.StatusBadRequest)

		// Masquerade as the ghost, with a massaged timestamp.
		ghost := asClient(t, srv, "@bridge_alice:localhost")
		human := srv.NewUser("human")
		created, err := human.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ghost.JoinRoomByID(ctx, created.RoomID); err != nil {
			t.Fatalf("ghost join: %v", err)
		}
		past := time.Now().Add(-time.Hour).UnixMilli()
		sent, err := ghost.SendMessageEvent(ctx, created.RoomID, event.EventMessage,
			&event.MessageEventContent{MsgType: event.MsgText, Body: "from the other side"}, mautrix.ReqSendEvent{Timestamp: past})
		if err != nil {
			t.Fatal(err)
		}
		ev, err := human.GetEvent(ctx, created.RoomID, sent.EventID)
		if err != nil || ev.Sender != "@bridge_alice:localhost" || ev.Timestamp != past {
			t.Fatalf("ghost's event = sender %s ts %d (want %d), %v", ev.Sender, ev.Timestamp, past, err)
		}
		// Masquerading outside the namespace, or as an unregistered ghost, is refused.
		_, err = asClient(t, srv, human.UserID).Whoami(ctx)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		_, err = asClient(t, srv, "@bridge_nobody:localhost").Whoami(ctx)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		// A wrong as_token is just an unknown token.
		wrong := srv.Client()
		wrong.AccessToken = "not-" + asToken
		_, err = wrong.Whoami(ctx)
		mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)

		// m.login.application_service gives the ghost a device of its own.
		login := srv.Client()
		login.AccessToken = asToken
		lresp, err := login.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypeAppservice,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bridge_alice"}})
		if err != nil || lresp.UserID != "@bridge_alice:localhost" || lresp.AccessToken == "" {
			t.Fatalf("appservice login = %+v, %v", lresp, err)
		}
	})
}

func TestAppservicePing(t *testing.T) {
	var gotAuth, gotPath string
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotPath = r.Header.Get("Authorization"), r.URL.Path
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	}))
	defer as.Close()
	srv := hstest.Start(t, testdb.SQLiteURI(t), withBridge(t, as.URL))
	bot := asClient(t, srv, "")
	resp, err := bot.AppservicePing(ctx, "bridge", "ping-1")
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	if gotAuth != "Bearer "+hsToken || gotPath != "/_matrix/app/v1/ping" || resp.DurationMS < 0 {
		t.Fatalf("ping reached %s with %q", gotPath, gotAuth)
	}
	// Another appservice's ID, or a user's token, is refused.
	_, err = bot.AppservicePing(ctx, "other", "")
	mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
	user := srv.NewUser("someone")
	_, err = user.AppservicePing(ctx, "bridge", "")
	mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
	// An appservice that is down gives a connection error.
	as.Close()
	_, err = bot.AppservicePing(ctx, "bridge", "")
	if !errors.Is(err, mautrix.MConnectionFailed) && !errors.Is(err, mautrix.MConnectionTimeout) {
		t.Fatalf("ping of a down appservice: %v", err)
	}
}

// The homeserver pushes the events an appservice is interested in, once it
// runs: a transaction with the ghost's room message arrives, with hs_token.
func TestAppserviceReceivesTransactions(t *testing.T) {
	type txn struct {
		id     string
		auth   string
		events []map[string]any
	}
	got := make(chan txn, 100)
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") {
			var body struct {
				Events []map[string]any `json:"events"`
			}
			_ = json.NewDecoder(r.Body).Decode(&body)
			got <- txn{id: strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"), auth: r.Header.Get("Authorization"), events: body.Events}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	}))
	defer as.Close()
	srv := hstest.Start(t, testdb.SQLiteURI(t), withBridge(t, as.URL))
	bot := asClient(t, srv, "")
	if _, _, err := bot.Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_carol", Type: mautrix.AuthTypeAppservice, InhibitLogin: true}); err != nil {
		t.Fatal(err)
	}
	human := srv.NewUser("human")
	created, err := human.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{"@bridge_carol:localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := asClient(t, srv, "@bridge_carol:localhost").JoinRoomByID(ctx, created.RoomID); err != nil {
		t.Fatal(err)
	}
	sendText(t, human, created.RoomID, "hello bridge")
	deadline := time.After(10 * time.Second)
	for {
		select {
		case tx := <-got:
			if tx.auth != "Bearer "+hsToken {
				t.Fatalf("transaction %s authorised with %q", tx.id, tx.auth)
			}
			for _, e := range tx.events {
				if content, _ := e["content"].(map[string]any); content["body"] == "hello bridge" && e["room_id"] == string(created.RoomID) {
					return
				}
			}
		case <-deadline:
			t.Fatal("the appservice never received the message")
		}
	}
}

// An appservice with receive_ephemeral gets, in its transactions, the
// typing, receipts and presence of the rooms and users it shares, and the
// to-device messages for its users' devices — in the formats mautrix's
// appservice package parses — but not other users' private receipts or
// the presence of users it shares nothing with.
func TestAppserviceReceivesEphemeral(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		var mu sync.Mutex
		var ephemeral, toDevice []*event.Event
		var raw []string
		changed := make(chan struct{}, 1)
		as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") {
				body, _ := io.ReadAll(r.Body)
				var txn appservice.Transaction
				if err := json.Unmarshal(body, &txn); err != nil {
					t.Errorf("transaction does not parse: %v", err)
				}
				mu.Lock()
				raw = append(raw, string(body))
				for _, e := range txn.EphemeralEvents {
					e.Type.Class = event.EphemeralEventType
					if err := e.Content.ParseRaw(e.Type); err != nil {
						t.Errorf("ephemeral %s content does not parse: %v", e.Type.Type, err)
					}
					ephemeral = append(ephemeral, e)
				}
				toDevice = append(toDevice, txn.MSC2409ToDeviceEvents...)
				mu.Unlock()
				select {
				case changed <- struct{}{}:
				default:
				}
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("{}"))
		}))
		defer as.Close()
		srv := hstest.Start(t, uri, withBridgeOptions(t, as.URL, "receive_ephemeral: true\n"))
		bot := asClient(t, srv, "")
		reg, _, err := bot.Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_carol", Type: mautrix.AuthTypeAppservice})
		if err != nil || reg.DeviceID == "" {
			t.Fatalf("register the ghost with a device: %+v, %v", reg, err)
		}
		human := srv.NewUser("human")
		stranger := srv.NewUser("stranger")
		created, err := human.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{"@bridge_carol:localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		carol := asClient(t, srv, "@bridge_carol:localhost")
		if _, err := carol.JoinRoomByID(ctx, created.RoomID); err != nil {
			t.Fatal(err)
		}
		said := sendText(t, carol, created.RoomID, "hi from the bridge")

		// Private first: if it were delivered, it would come before the rest.
		if err := human.SendReceipt(ctx, created.RoomID, said, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		if err := stranger.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "not here"}); err != nil {
			t.Fatal(err)
		}
		if _, err := human.UserTyping(ctx, created.RoomID, true, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := human.SendReceipt(ctx, created.RoomID, said, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		if err := human.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "bridging"}); err != nil {
			t.Fatal(err)
		}
		secret := event.Type{Type: "org.example.secret", Class: event.ToDeviceEventType}
		_, err = human.SendToDevice(ctx, secret, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			"@bridge_carol:localhost": {reg.DeviceID: {Raw: map[string]any{"key": "value"}}},
			"@stranger:localhost":     {"*": {Raw: map[string]any{"key": "not for the bridge"}}},
		}})
		if err != nil {
			t.Fatal(err)
		}

		var typing, receipt, presence, message bool
		deadline := time.After(15 * time.Second)
		for !(typing && receipt && presence && message) {
			select {
			case <-changed:
			case <-deadline:
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("missing ephemeral data (typing %v, receipt %v, presence %v, to-device %v); transactions:\n%s",
					typing, receipt, presence, message, strings.Join(raw, "\n"))
			}
			mu.Lock()
			for _, e := range ephemeral {
				switch e.Type.Type {
				case event.EphemeralEventTyping.Type:
					if e.RoomID == created.RoomID && slices.Equal(e.Content.AsTyping().UserIDs, []id.UserID{"@human:localhost"}) {
						typing = true
					}
				case event.EphemeralEventReceipt.Type:
					if e.RoomID != created.RoomID {
						t.Errorf("receipt of room %q", e.RoomID)
					}
					for eventID, types := range *e.Content.AsReceipt() {
						if _, private := types[event.ReceiptTypeReadPrivate]; private {
							t.Errorf("another user's private receipt was sent: %v", types)
						}
						if _, ok := types[event.ReceiptTypeRead]["@human:localhost"]; ok && eventID == said {
							receipt = true
						}
					}
				case event.EphemeralEventPresence.Type:
					switch e.Sender {
					case "@human:localhost":
						presence = presence || e.Content.AsPresence().StatusMessage == "bridging"
					case "@stranger:localhost":
						t.Errorf("presence of a user sharing no room was sent")
					}
				}
			}
			for _, e := range toDevice {
				if e.Type.Type != secret.Type || e.Sender != "@human:localhost" {
					t.Errorf("unexpected to-device message %+v", e)
				}
				if e.ToUserID == "@bridge_carol:localhost" && e.ToDeviceID == reg.DeviceID && e.Content.Raw["key"] == "value" {
					message = true
				} else {
					t.Errorf("to-device message for someone else: %+v", e)
				}
			}
			mu.Unlock()
		}
		// Delivered to-device messages leave the inbox once acknowledged;
		// the stranger's stays for their own sync.
		for wait := time.Now().Add(5 * time.Second); ; {
			pending, err := srv.HS.DB.ToDeviceInRange(ctx, 0, 1<<62, 100)
			if err != nil {
				t.Fatal(err)
			}
			var users []id.UserID
			for _, m := range pending {
				users = append(users, m.UserID)
			}
			if slices.Equal(users, []id.UserID{"@stranger:localhost"}) {
				break
			}
			if time.Now().After(wait) {
				t.Fatalf("pending to-device messages for %v, want only the stranger's", users)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// Unknown users and aliases in an appservice's namespaces are queried from
// it before the client gets its answer: that is how bridges make portal
// rooms and ghosts on demand.
func TestAppserviceQueries(t *testing.T) {
	var srv *hstest.Server
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+hsToken {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/_matrix/app/v1/rooms/#bridge_portal:localhost":
			if _, err := asClient(t, srv, "").CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "bridge_portal"}); err != nil {
				t.Errorf("appservice creating the portal: %v", err)
			}
			w.Write([]byte("{}"))
		case "/_matrix/app/v1/users/@bridge_dave:localhost":
			if _, _, err := asClient(t, srv, "").Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_dave", Type: mautrix.AuthTypeAppservice, InhibitLogin: true}); err != nil {
				t.Errorf("appservice creating the ghost: %v", err)
			}
			w.Write([]byte("{}"))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"no"}`))
		}
	}))
	defer as.Close()
	srv = hstest.Start(t, testdb.SQLiteURI(t), withBridge(t, as.URL))
	human := srv.NewUser("human")
	joined, err := human.JoinRoom(ctx, "#bridge_portal:localhost", nil)
	if err != nil {
		t.Fatalf("joining an alias the appservice provides: %v", err)
	}
	created, err := human.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := human.InviteUser(ctx, created.RoomID, &mautrix.ReqInviteUser{UserID: "@bridge_dave:localhost"}); err != nil {
		t.Fatalf("inviting a ghost the appservice provides: %v", err)
	}
	_, err = human.InviteUser(ctx, created.RoomID, &mautrix.ReqInviteUser{UserID: "@bridge_nobody:localhost"})
	mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
	_, err = human.JoinRoom(ctx, "#bridge_nowhere:localhost", nil)
	mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
	if joined.RoomID == "" {
		t.Fatal("no room ID")
	}
}

// Durability: the appservice is down while 500 events are sent, the
// homeserver restarts while it is still down, then it comes back: it gets
// all 500 exactly once, in order (deduplicating by transaction ID, as the
// spec asks of appservices — a resent transaction carries the same ID and
// the same events).
func TestAppserviceTransactionsSurviveRestart(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		var mu sync.Mutex
		down := true
		seenTxn := map[string][]string{}
		var bodies []string
		as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			if down {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") {
				txnID := strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
				var body struct {
					Events []struct {
						ID      string         `json:"event_id"`
						Type    string         `json:"type"`
						Content map[string]any `json:"content"`
					} `json:"events"`
				}
				_ = json.NewDecoder(r.Body).Decode(&body)
				var ids []string
				for _, e := range body.Events {
					ids = append(ids, e.ID)
				}
				if prev, dup := seenTxn[txnID]; dup {
					if !slices.Equal(prev, ids) {
						t.Errorf("transaction %s resent with different events", txnID)
					}
				} else {
					seenTxn[txnID] = ids
					for _, e := range body.Events {
						if b, ok := e.Content["body"].(string); ok && e.Type == "m.room.message" {
							bodies = append(bodies, b)
						}
					}
				}
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("{}"))
		}))
		defer as.Close()
		mutate := withBridge(t, as.URL)
		srv := hstest.Start(t, uri, mutate)
		if _, _, err := asClient(t, srv, "").Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_eve", Type: mautrix.AuthTypeAppservice, InhibitLogin: true}); err != nil {
			t.Fatal(err)
		}
		human := srv.NewUser("human")
		created, err := human.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{"@bridge_eve:localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := asClient(t, srv, "@bridge_eve:localhost").JoinRoomByID(ctx, created.RoomID); err != nil {
			t.Fatal(err)
		}
		const n = 500
		for i := 0; i < n; i++ {
			sendText(t, human, created.RoomID, fmt.Sprintf("m%03d", i))
		}
		srv.Stop()

		// A new process on the same database, the appservice still down.
		srv2 := hstest.Start(t, uri, mutate)
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		down = false
		mu.Unlock()
		srv2.HS.Pusher.Retry("bridge")
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			got := len(bodies)
			mu.Unlock()
			if got >= n || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) != n {
			t.Fatalf("appservice got %d messages, want %d", len(bodies), n)
		}
		for i, b := range bodies {
			if b != fmt.Sprintf("m%03d", i) {
				t.Fatalf("message %d is %q: out of order or duplicated", i, b)
			}
		}
	})
}

// Third-party lookups go to the appservices that declare the protocol.
func TestThirdPartyLookups(t *testing.T) {
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+hsToken {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/_matrix/app/v1/thirdparty/protocol/irc":
			w.Write([]byte(`{"user_fields":["network","nickname"],"location_fields":["network","channel"],"icon":"mxc://localhost/irc",
				"field_types":{"network":{"regexp":"[a-z]+","placeholder":"libera"},"channel":{"regexp":"#.+","placeholder":"#matrix"},"nickname":{"regexp":".+","placeholder":"alice"}},
				"instances":[{"desc":"Libera Chat","fields":{"network":"libera"},"network_id":"libera"}]}`))
		case r.URL.Path == "/_matrix/app/v1/thirdparty/location/irc" && r.URL.Query().Get("channel") == "#matrix":
			w.Write([]byte(`[{"alias":"#bridge_libera_#matrix:localhost","protocol":"irc","fields":{"network":"libera","channel":"#matrix"}}]`))
		case r.URL.Path == "/_matrix/app/v1/thirdparty/location" && r.URL.Query().Get("alias") == "#bridge_libera_#matrix:localhost":
			w.Write([]byte(`[{"alias":"#bridge_libera_#matrix:localhost","protocol":"irc","fields":{"network":"libera","channel":"#matrix"}}]`))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"no"}`))
		}
	}))
	defer as.Close()
	srv := hstest.Start(t, testdb.SQLiteURI(t), withBridge(t, as.URL))
	user := srv.NewUser("explorer")
	var protocols map[string]struct {
		Instances []struct {
			Desc string `json:"desc"`
		} `json:"instances"`
	}
	if _, err := user.MakeRequest(ctx, http.MethodGet, user.BuildClientURL("v3", "thirdparty", "protocols"), nil, &protocols); err != nil {
		t.Fatal(err)
	}
	if len(protocols["irc"].Instances) != 1 || protocols["irc"].Instances[0].Desc != "Libera Chat" {
		t.Fatalf("protocols = %+v", protocols)
	}
	var locations []map[string]any
	u := user.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "thirdparty", "location", "irc"}, map[string]string{"network": "libera", "channel": "#matrix"})
	if _, err := user.MakeRequest(ctx, http.MethodGet, u, nil, &locations); err != nil || len(locations) != 1 || locations[0]["alias"] != "#bridge_libera_#matrix:localhost" {
		t.Fatalf("locations = %v, %v", locations, err)
	}
	u = user.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "thirdparty", "location"}, map[string]string{"alias": "#bridge_libera_#matrix:localhost"})
	if _, err := user.MakeRequest(ctx, http.MethodGet, u, nil, &locations); err != nil || len(locations) != 1 {
		t.Fatalf("reverse location = %v, %v", locations, err)
	}
	_, err := user.MakeRequest(ctx, http.MethodGet, user.BuildClientURL("v3", "thirdparty", "protocol", "xmpp"), nil, nil)
	mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
}

// An appservice publishes portal rooms in its network's directory; they
// are listed only when a client asks for that network (or all networks).
func TestAppserviceRoomDirectory(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), withBridge(t, ""))
	bot := asClient(t, srv, "")
	portal, err := bot.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "#matrix on Libera"})
	if err != nil {
		t.Fatal(err)
	}
	human := srv.NewUser("human")
	plain, err := human.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: "Plain"})
	if err != nil {
		t.Fatal(err)
	}
	put := func(cli *mautrix.Client) error {
		_, err := cli.MakeRequest(ctx, http.MethodPut, cli.BuildClientURL("v3", "directory", "list", "appservice", "libera", portal.RoomID),
			map[string]any{"visibility": "public"}, nil)
		return err
	}
	mustErr(t, put(human), mautrix.MForbidden, http.StatusForbidden)
	if err := put(bot); err != nil {
		t.Fatalf("appservice publishing: %v", err)
	}
	list := func(req *mautrix.ReqPublicRooms) []id.RoomID {
		t.Helper()
		resp, err := human.PublicRooms(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var ids []id.RoomID
		for _, r := range resp.Chunk {
			ids = append(ids, r.RoomID)
		}
		return ids
	}
	if got := list(&mautrix.ReqPublicRooms{}); !slices.Equal(got, []id.RoomID{plain.RoomID}) {
		t.Fatalf("main directory = %v, want just the plain room", got)
	}
	if got := list(&mautrix.ReqPublicRooms{ThirdPartyInstanceID: "bridge|libera"}); !slices.Equal(got, []id.RoomID{portal.RoomID}) {
		t.Fatalf("libera directory = %v, want the portal", got)
	}
	if got := list(&mautrix.ReqPublicRooms{IncludeAllNetworks: true}); len(got) != 2 {
		t.Fatalf("all networks = %v, want both rooms", got)
	}
}
