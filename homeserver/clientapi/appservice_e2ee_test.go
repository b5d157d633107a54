package clientapi_test

import (
	"encoding/json"
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
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// txnReceiver is an appservice's transaction endpoint that keeps every
// request, parsed as mautrix-go parses it, and answers 500 while failing.
type txnReceiver struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	failing bool
	got     []receivedTxn
	changed chan struct{}
}

type receivedTxn struct {
	id   string
	raw  string
	txn  appservice.Transaction
	fail bool // answered 500
}

func newTxnReceiver(t *testing.T) *txnReceiver {
	r := &txnReceiver{t: t, changed: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		txnID, ok := strings.CutPrefix(req.URL.Path, "/_matrix/app/v1/transactions/")
		if req.Method != http.MethodPut || !ok {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("{}"))
			return
		}
		body, _ := io.ReadAll(req.Body)
		rt := receivedTxn{id: txnID, raw: string(body)}
		if err := json.Unmarshal(body, &rt.txn); err != nil {
			t.Errorf("transaction does not parse: %v", err)
		}
		r.mu.Lock()
		rt.fail = r.failing
		r.got = append(r.got, rt)
		r.mu.Unlock()
		select {
		case r.changed <- struct{}{}:
		default:
		}
		if rt.fail {
			http.Error(w, `{"errcode":"M_UNKNOWN"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *txnReceiver) setFailing(v bool) {
	r.mu.Lock()
	r.failing = v
	r.mu.Unlock()
}

func (r *txnReceiver) all() []receivedTxn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// wait waits for a request after the first `after` that satisfies cond and
// returns its index.
func (r *txnReceiver) wait(what string, after int, cond func(rt receivedTxn) bool) int {
	r.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		got := r.all()
		for i := after; i < len(got); i++ {
			if cond(got[i]) {
				return i
			}
		}
		select {
		case <-r.changed:
		case <-deadline:
			var raw []string
			for _, rt := range got[after:] {
				raw = append(raw, rt.id+": "+rt.raw)
			}
			r.t.Fatalf("no transaction with %s; received after #%d:\n%s", what, after, strings.Join(raw, "\n"))
		}
	}
}

// withSecondAppservice adds an appservice "plain" owning @plain_*, without
// MSC3202, reachable at url.
func withSecondAppservice(t *testing.T, url string, mutate func(*config.Config)) func(*config.Config) {
	path := filepath.Join(t.TempDir(), "plain.yaml")
	reg := fmt.Sprintf(`id: plain
url: %q
as_token: plain-as-token-0123456789
hs_token: plain-hs-token-0123456789
sender_localpart: plainbot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@plain_.*"
`, url)
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) {
		mutate(c)
		c.AppserviceRegistrations = append(c.AppserviceRegistrations, path)
	}
}

func deviceListed(rt receivedTxn, user id.UserID, left bool) bool {
	dl := rt.txn.MSC3202DeviceLists
	if dl == nil {
		return false
	}
	if left {
		return slices.Contains(dl.Left, user)
	}
	return slices.Contains(dl.Changed, user)
}

func otkCount(rt receivedTxn, user id.UserID, device id.DeviceID) (int, bool) {
	c, ok := rt.txn.MSC3202DeviceOTKCount[user][device]
	return c.SignedCurve25519, ok
}

// An appservice with org.matrix.msc3202 gets the device-list changes of
// the users its users share rooms with and its devices' key counts in its
// transactions (what mautrix bridges need for end-to-bridge encryption in
// appservice mode); one without it gets none of them.
func TestAppserviceMSC3202DeviceListsAndKeyCounts(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		bridge := newTxnReceiver(t)
		plain := newTxnReceiver(t)
		srv := hstest.Start(t, uri, withSecondAppservice(t, plain.srv.URL,
			withBridgeOptions(t, bridge.srv.URL, "org.matrix.msc3202: true\n")))
		reg, _, err := asClient(t, srv, "").Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_carol", Type: mautrix.AuthTypeAppservice})
		if err != nil || reg.DeviceID == "" {
			t.Fatalf("register the ghost with a device: %+v, %v", reg, err)
		}
		plainBot := srv.Client()
		plainBot.AccessToken = "plain-as-token-0123456789"
		if _, _, err := plainBot.Register(ctx, &mautrix.ReqRegister[any]{Username: "plain_dave", Type: mautrix.AuthTypeAppservice, InhibitLogin: true}); err != nil {
			t.Fatal(err)
		}
		dave := srv.Client()
		dave.AccessToken, dave.UserID, dave.SetAppServiceUserID = plainBot.AccessToken, "@plain_dave:localhost", true

		alice := srv.NewUser("alice")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{"@bridge_carol:localhost", dave.UserID}})
		if err != nil {
			t.Fatal(err)
		}
		carol := asClient(t, srv, "@bridge_carol:localhost")
		carol.DeviceID, carol.SetAppServiceDeviceID = reg.DeviceID, true
		for _, cli := range []*mautrix.Client{carol, dave} {
			if _, err := cli.JoinRoomByID(ctx, created.RoomID); err != nil {
				t.Fatal(err)
			}
		}
		joined := bridge.wait("carol's join", 0, func(rt receivedTxn) bool {
			for _, e := range rt.txn.Events {
				if e.StateKey != nil && *e.StateKey == "@bridge_carol:localhost" && e.Content.Raw["membership"] == "join" {
					return true
				}
			}
			return false
		})
		// Joining a room makes its members' device lists new to the bridge.
		if !deviceListed(bridge.all()[joined], alice.UserID, false) {
			t.Errorf("carol's join did not list alice as changed: %s", bridge.all()[joined].raw)
		}

		// alice's new device keys: alice is changed.
		aliceDev := newTestDevice(t, alice)
		aliceDev.publish(t, 1)
		bridge.wait("alice's device list change", joined+1, func(rt receivedTxn) bool { return deviceListed(rt, alice.UserID, false) })

		// The bridge's device publishes keys and a fallback key: its counts
		// come without any event.
		carolDev := newTestDevice(t, carol)
		carolDev.publish(t, 3)
		name, obj := carolDev.signedKey(t, true)
		if _, err := carolDev.upload(t, map[string]any{"fallback_keys": map[string]any{name: obj}}); err != nil {
			t.Fatal(err)
		}
		n := bridge.wait("carol's 3 one-time keys and a fallback key", 0, func(rt receivedTxn) bool {
			c, ok := otkCount(rt, carol.UserID, reg.DeviceID)
			fb := rt.txn.MSC3202FallbackKeys[carol.UserID][reg.DeviceID]
			return ok && c == 3 && slices.Equal(fb, []id.KeyAlgorithm{id.KeyAlgorithmSignedCurve25519})
		})

		// alice claims one: the count drops to 2 in a transaction of its own.
		claimOne(t, alice, carol.UserID, reg.DeviceID)
		n = bridge.wait("2 one-time keys after a claim", n+1, func(rt receivedTxn) bool {
			c, ok := otkCount(rt, carol.UserID, reg.DeviceID)
			return ok && c == 2
		})
		if got := bridge.all()[n]; len(got.txn.Events) != 0 {
			t.Errorf("the key count came with events: %s", got.raw)
		}

		// A failed delivery is retried with the same body, even though the
		// count changed again meanwhile; the new count follows.
		bridge.setFailing(true)
		claimOne(t, alice, carol.UserID, reg.DeviceID)
		failed := bridge.wait("a failed attempt", n+1, func(rt receivedTxn) bool { return rt.fail })
		claimOne(t, alice, carol.UserID, reg.DeviceID)
		bridge.setFailing(false)
		retried := bridge.wait("the retry", failed+1, func(rt receivedTxn) bool { return !rt.fail })
		first, again := bridge.all()[failed], bridge.all()[retried]
		if again.id != first.id || again.raw != first.raw {
			t.Fatalf("retry differs from the failed attempt:\n%s %s\n%s %s", first.id, first.raw, again.id, again.raw)
		}
		if c, ok := otkCount(first, carol.UserID, reg.DeviceID); !ok || c != 1 {
			t.Errorf("failed transaction carries count %d (%v), want 1: %s", c, ok, first.raw)
		}
		bridge.wait("0 one-time keys", retried+1, func(rt receivedTxn) bool {
			c, ok := otkCount(rt, carol.UserID, reg.DeviceID)
			return ok && c == 0
		})

		// alice leaves the only room she shares with the bridge's users.
		if _, err := alice.LeaveRoom(ctx, created.RoomID); err != nil {
			t.Fatal(err)
		}
		bridge.wait("alice in left", 0, func(rt receivedTxn) bool { return deviceListed(rt, alice.UserID, true) })

		// The appservice without the flag got the same room's events but
		// none of the encryption extensions.
		plain.wait("alice's leave", 0, func(rt receivedTxn) bool {
			for _, e := range rt.txn.Events {
				if e.StateKey != nil && *e.StateKey == string(alice.UserID) && e.Content.Raw["membership"] == "leave" {
					return true
				}
			}
			return false
		})
		for _, rt := range plain.all() {
			if strings.Contains(rt.raw, "msc3202") {
				t.Errorf("appservice without org.matrix.msc3202 got: %s", rt.raw)
			}
		}
	})
}
