package appservice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	mauas "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/appservice"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

var ctx = context.Background()

const hsToken = "hs-token-0123456789abcdef0123"

// regFile is a registration for appservice asID whose users are
// @_asID_…, aliases #_asID_… and rooms those matching roomRegex (none if
// empty).
func regFile(asID, url, roomRegex string) string {
	rooms := "  rooms: []\n"
	if roomRegex != "" {
		rooms = fmt.Sprintf("  rooms:\n    - exclusive: false\n      regex: %q\n", roomRegex)
	}
	return fmt.Sprintf(`id: %[1]s
url: %[2]q
as_token: "as-%[1]s-token-0123456789abcdef"
hs_token: "%[3]s-%[1]s"
sender_localpart: "_%[1]s_bot"
namespaces:
  users:
    - exclusive: false
      regex: "@_%[1]s_.*:localhost"
  aliases:
    - exclusive: false
      regex: "#_%[1]s_.*:localhost"
%[4]s`, asID, url, hsToken, rooms)
}

// loadRegistry writes the registrations (file name → content) into a data
// directory and loads them.
func loadRegistry(t *testing.T, files map[string]string) *appservice.Registry {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, appservice.Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, appservice.Dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := appservice.Load(ctx, dir, nil, "localhost", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// receiver is an appservice built on mautrix's AppService: its HTTP
// handler receives the transactions. In front of it the test can make the
// appservice fail (HTTP 500) or lose the acknowledgement of a transaction
// it processed (the connection drops before the answer), and it records
// every request.
type receiver struct {
	t   *testing.T
	as  *mauas.AppService
	srv *httptest.Server

	mu     sync.Mutex
	mode   string // "ok", "fail", "lose-ack-once"
	reqs   []request
	events []*event.Event
	seen   map[id.EventID]int
	got    chan struct{}
}

type request struct {
	txnID  string
	events int
	result string // "ok", "fail", "ack lost"
	at     time.Time
}

func newReceiver(t *testing.T, mode string) *receiver {
	r := &receiver{t: t, mode: mode, as: mauas.Create(), seen: map[id.EventID]int{}, got: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	go func() {
		for evt := range r.as.Events {
			r.mu.Lock()
			r.events = append(r.events, evt)
			r.seen[evt.ID]++
			r.mu.Unlock()
			select {
			case r.got <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

// use gives the mautrix appservice the registration the homeserver loaded.
func (r *receiver) use(reg *appservice.Registry, asID string) {
	r.as.Registration = reg.ByID(asID).Registration
}

func (r *receiver) setMode(mode string) {
	r.mu.Lock()
	r.mode = mode
	r.mu.Unlock()
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	txnID, ok := strings.CutPrefix(req.URL.Path, "/_matrix/app/v1/transactions/")
	if !ok || req.Method != http.MethodPut || req.URL.RawQuery != "" {
		r.t.Errorf("unexpected request %s %s", req.Method, req.URL)
		http.Error(w, "unexpected", http.StatusBadRequest)
		return
	}
	body, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(body))
	var txn struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &txn); err != nil || txn.Events == nil {
		r.t.Errorf("transaction %s: body without events: %s", txnID, body)
	}
	r.mu.Lock()
	mode := r.mode
	if mode == "lose-ack-once" {
		r.mode = "ok"
	}
	r.mu.Unlock()
	record := func(result string) {
		r.mu.Lock()
		r.reqs = append(r.reqs, request{txnID: txnID, events: len(txn.Events), result: result, at: time.Now()})
		r.mu.Unlock()
	}
	switch mode {
	case "fail":
		record("fail")
		http.Error(w, `{"errcode":"M_UNKNOWN","error":"bridge is down"}`, http.StatusInternalServerError)
	case "lose-ack-once":
		// The appservice processes the transaction, then the answer is lost.
		rec := httptest.NewRecorder()
		r.as.Router.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			r.t.Errorf("mautrix answered %d: %s", rec.Code, rec.Body)
		}
		record("ack lost")
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			r.t.Error(err)
			return
		}
		conn.Close()
	default:
		rec := httptest.NewRecorder()
		r.as.Router.ServeHTTP(rec, req)
		result := "ok"
		if rec.Code != http.StatusOK {
			result = fmt.Sprintf("mautrix answered %d: %s", rec.Code, rec.Body)
		}
		record(result)
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitEvent waits until the appservice received the event.
func (r *receiver) waitEvent(t *testing.T, eventID id.EventID) {
	t.Helper()
	waitFor(t, "event "+string(eventID), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.seen[eventID] > 0
	})
}

func (r *receiver) eventIDs() []id.EventID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []id.EventID
	for _, e := range r.events {
		out = append(out, e.ID)
	}
	return out
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func newPusher(t *testing.T, srv *hstest.Server, reg *appservice.Registry, log zerolog.Logger) *appservice.Pusher {
	t.Helper()
	hs := srv.HS
	p := appservice.NewPusher(hs.DB, hs.Rooms, reg, hs.Notifier, srv.Config.ServerName, log, nil)
	p.MinBackoff, p.MaxBackoff = 5*time.Millisecond, 40*time.Millisecond
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func testLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

func stat(p *appservice.Pusher, asID string) appservice.Stat {
	for _, s := range p.Stats() {
		if s.ID == asID {
			return s
		}
	}
	return appservice.Stat{}
}

func send(t *testing.T, cli *mautrix.Client, roomID id.RoomID, text string) id.EventID {
	t.Helper()
	resp, err := cli.SendText(ctx, roomID, text)
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	return resp.EventID
}

func createRoom(t *testing.T, cli *mautrix.Client, invite ...id.UserID) id.RoomID {
	t.Helper()
	resp, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: invite})
	if err != nil {
		t.Fatal(err)
	}
	return resp.RoomID
}

// The appservice receives, in stream order, the events in rooms of its
// room namespace, in rooms with an alias in its alias namespace, in rooms
// where one of its users is joined, and the membership of its users; and
// nothing else.
func TestPusherDeliversInterestingEventsInOrder(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		ghost := srv.NewUser("_bridge_ghost")
		nsRoom := createRoom(t, alice)
		aliasRoom := createRoom(t, alice)
		if _, err := alice.CreateAlias(ctx, "#_bridge_chan:localhost", aliasRoom); err != nil {
			t.Fatal(err)
		}
		ghostRoom := createRoom(t, alice)
		privateRoom := createRoom(t, alice, bob.UserID)
		if _, err := bob.JoinRoomByID(ctx, privateRoom); err != nil {
			t.Fatal(err)
		}

		recv := newReceiver(t, "ok")
		reg := loadRegistry(t, map[string]string{"bridge.yaml": regFile("bridge", recv.srv.URL, "^"+strings.ReplaceAll(string(nsRoom), ".", `\.`)+"$")})
		recv.use(reg, "bridge")
		p := newPusher(t, srv, reg, testLog(t))

		var want []id.EventID
		// Membership of its user: the invite (sent by alice, about the
		// ghost) and the join; from then on the whole room.
		inv, err := alice.SendStateEvent(ctx, ghostRoom, event.StateMember, string(ghost.UserID), &event.MemberEventContent{Membership: event.MembershipInvite})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, inv.EventID)
		if _, err := ghost.JoinRoomByID(ctx, ghostRoom); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			want = append(want, send(t, alice, nsRoom, fmt.Sprintf("ns %d", i)))
			send(t, bob, privateRoom, fmt.Sprintf("private %d", i))
			want = append(want, send(t, alice, aliasRoom, fmt.Sprintf("alias %d", i)))
			want = append(want, send(t, alice, ghostRoom, fmt.Sprintf("ghost room %d", i)))
			want = append(want, send(t, ghost, ghostRoom, fmt.Sprintf("from ghost %d", i)))
		}
		last := send(t, alice, nsRoom, "last")
		want = append(want, last)
		recv.waitEvent(t, last)

		got := recv.eventIDs()
		// The join's event ID is known from the stream only: it follows the invite.
		if len(got) != len(want)+1 {
			t.Fatalf("received %d events, want %d: %v", len(got), len(want)+1, got)
		}
		recv.mu.Lock()
		joinGot := recv.events[1]
		recv.mu.Unlock()
		if joinGot.Type != event.StateMember || joinGot.GetStateKey() != string(ghost.UserID) ||
			joinGot.Content.AsMember().Membership != event.MembershipJoin {
			t.Fatalf("second event = %s %s %v, want the ghost's join", joinGot.Type.Type, joinGot.GetStateKey(), joinGot.Content.Raw)
		}
		want = slices.Insert(want, 1, joinGot.ID)
		if !slices.Equal(got, want) {
			t.Fatalf("received\n%v\nwant\n%v", got, want)
		}
		recv.mu.Lock()
		for _, e := range recv.events {
			if e.RoomID == "" || e.Sender == "" || e.Timestamp == 0 {
				t.Errorf("event %s lacks room_id, sender or origin_server_ts", e.ID)
			}
			if e.RoomID == privateRoom {
				t.Errorf("received an event of the private room: %s", e.ID)
			}
		}
		recv.mu.Unlock()
		for _, r := range recv.requests() {
			if r.result != "ok" {
				t.Errorf("transaction %s: %s", r.txnID, r.result)
			}
		}
		// The pusher records the answer after the appservice handled the events.
		waitFor(t, "stats to show every event delivered", func() bool { return stat(p, "bridge").InFlight == 0 })
		s := stat(p, "bridge")
		if s.State != appservice.StateUp || s.Failures != 0 || s.LastSuccess.IsZero() || s.Events != uint64(len(want)) {
			t.Errorf("stats = %+v", s)
		}
	})
}

// A down appservice loses nothing across a homeserver restart and gets
// nothing twice: the transaction in flight is resent with the same txnId,
// also after the appservice processed it but its answer was lost.
func TestPusherDurableAcrossRestartAndLostAck(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		ghost := srv.NewUser("_bridge_ghost")
		room := createRoom(t, ghost)

		recv := newReceiver(t, "fail")
		reg := loadRegistry(t, map[string]string{"bridge.yaml": regFile("bridge", recv.srv.URL, "")})
		recv.use(reg, "bridge")
		first := newPusher(t, srv, reg, testLog(t))
		var want []id.EventID
		for i := range 50 {
			want = append(want, send(t, ghost, room, fmt.Sprintf("msg %d", i)))
		}
		waitFor(t, "three failed attempts", func() bool { return stat(first, "bridge").Failures >= 3 })
		first.Stop()

		row, err := srv.HS.DB.GetAppserviceStream(ctx, "bridge")
		if err != nil {
			t.Fatal(err)
		}
		if !row.InFlight() || row.Failures < 3 || row.LastError == "" || row.DownSinceTS == 0 {
			t.Fatalf("queue after stop = %+v, want a transaction in flight and the failures", row)
		}
		inFlight := fmt.Sprint(row.TxnID)
		for _, r := range recv.requests() {
			if r.txnID != inFlight || r.result != "fail" || r.events != len(row.TxnEvents) {
				t.Fatalf("attempt %+v, want every attempt to be transaction %s with %d events", r, inFlight, len(row.TxnEvents))
			}
		}
		failedAttempts := len(recv.requests())

		// The "restarted" homeserver: a new pusher on the same database.
		// The appservice is back, but the answer to the first transaction
		// it processes is lost.
		recv.setMode("lose-ack-once")
		second := newPusher(t, srv, reg, testLog(t))
		recv.waitEvent(t, want[len(want)-1])
		waitFor(t, "the queue to drain", func() bool {
			s := stat(second, "bridge")
			return s.State == appservice.StateUp && s.InFlight == 0 && s.Lag == 0
		})

		if got := recv.eventIDs(); !slices.Equal(got, want) {
			t.Fatalf("received %d events\n%v\nwant each of the 50 once, in order\n%v", len(got), got, want)
		}
		reqs := recv.requests()[failedAttempts:]
		// The in-flight transaction may already hold all 50 events (when the
		// first attempt came after the last send); later ones carry the rest.
		if len(reqs) < 2 || reqs[0].txnID != inFlight || reqs[0].result != "ack lost" ||
			reqs[1].txnID != inFlight || reqs[1].result != "ok" || reqs[1].events != reqs[0].events {
			t.Fatalf("after the restart: %+v; want transaction %s resent after its lost answer with the same events", reqs, inFlight)
		}
		next := row.TxnID + 1
		total := reqs[0].events
		for _, r := range reqs[2:] {
			if r.txnID != fmt.Sprint(next) || r.result != "ok" {
				t.Fatalf("after the restart: %+v; want transactions %s, %s again, then %d, %d, … once each", reqs, inFlight, inFlight, row.TxnID+1, row.TxnID+2)
			}
			next++
			total += r.events
		}
		if total != 50 {
			t.Errorf("transactions carried %d events, want 50", total)
		}
		row, err = srv.HS.DB.GetAppserviceStream(ctx, "bridge")
		if err != nil {
			t.Fatal(err)
		}
		if row.InFlight() || row.Failures != 0 || row.TxnID != next || row.LastSuccessTS == 0 {
			t.Errorf("queue after delivery = %+v", row)
		}
	})
}

// More than MaxTxnEvents queued events go out as several transactions, in
// order, none larger than the cap.
func TestPusherBatches(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		ghost := srv.NewUser("_bridge_ghost")
		room := createRoom(t, ghost)
		recv := newReceiver(t, "ok")
		reg := loadRegistry(t, map[string]string{"bridge.yaml": regFile("bridge", recv.srv.URL, "")})
		recv.use(reg, "bridge")
		// Start once so the appservice's queue begins here, then queue
		// 250 events while no pusher runs.
		first := newPusher(t, srv, reg, testLog(t))
		first.Stop()
		var want []id.EventID
		for i := range 250 {
			want = append(want, send(t, ghost, room, fmt.Sprintf("msg %d", i)))
		}
		newPusher(t, srv, reg, testLog(t))
		recv.waitEvent(t, want[len(want)-1])
		if got := recv.eventIDs(); !slices.Equal(got, want) {
			t.Fatalf("received %d events, want the 250 in order", len(got))
		}
		var sizes []int
		for i, r := range recv.requests() {
			if r.txnID != fmt.Sprint(i+1) || r.result != "ok" {
				t.Errorf("request %d: %+v", i, r)
			}
			sizes = append(sizes, r.events)
		}
		if !slices.Equal(sizes, []int{100, 100, 50}) {
			t.Errorf("transaction sizes %v, want [100 100 50]", sizes)
		}
	})
}

// lockedBuffer collects log lines from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count returns how many log lines have message msg and as_id asID.
func (b *lockedBuffer) count(msg, asID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, line := range strings.Split(b.buf.String(), "\n") {
		var entry struct {
			Message string `json:"message"`
			ASID    string `json:"as_id"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && strings.HasPrefix(entry.Message, msg) && entry.ASID == asID {
			n++
		}
	}
	return n
}

// A failing appservice backs off, counts its failures, is reported once
// when it goes down and once when it recovers, and does not hold up other
// appservices; one that is not even listening is handled the same way.
func TestPusherBackoffAndReporting(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		ghost := srv.NewUser("_bridge_ghost")
		room := createRoom(t, ghost)
		other := srv.NewUser("_other_ghost")
		otherRoom := createRoom(t, other)
		dead := srv.NewUser("_dead_ghost")

		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closedURL := "http://" + ln.Addr().String()
		ln.Close()
		bridge, otherRecv := newReceiver(t, "fail"), newReceiver(t, "ok")
		reg := loadRegistry(t, map[string]string{
			"bridge.yaml": regFile("bridge", bridge.srv.URL, ""),
			"other.yaml":  regFile("other", otherRecv.srv.URL, ""),
			"dead.yaml":   regFile("dead", closedURL, ""),
			"nourl.yaml":  strings.Replace(regFile("nourl", "", ""), `url: ""`, "url: null", 1),
		})
		bridge.use(reg, "bridge")
		otherRecv.use(reg, "other")
		logs := &lockedBuffer{}
		p := newPusher(t, srv, reg, zerolog.New(logs).Level(zerolog.InfoLevel))
		metrics := prometheus.NewPedanticRegistry()
		metrics.MustRegister(p.Collector())

		send(t, ghost, room, "hello")
		send(t, ghost, room, "again")
		createRoom(t, dead)
		waitFor(t, "failures", func() bool { return stat(p, "bridge").Failures >= 6 })
		// Backoff: 5 ms doubling to 40 ms (±25%) puts 5+10+20+40+40 ms
		// between six attempts, at least 86 ms with jitter; without it
		// they would be back to back.
		attempts := bridge.requests()
		if took := attempts[5].at.Sub(attempts[0].at); took < 80*time.Millisecond {
			t.Errorf("six attempts took %v: no backoff", took)
		}
		if gap := attempts[5].at.Sub(attempts[4].at); gap < 30*time.Millisecond {
			t.Errorf("the sixth attempt came %v after the fifth, want about 40 ms (the cap)", gap)
		}
		// The other appservice is unaffected.
		otherEvt := send(t, other, otherRoom, "unaffected")
		otherRecv.waitEvent(t, otherEvt)

		s := stat(p, "bridge")
		if s.State != appservice.StateDown || s.DownSince.IsZero() || !strings.Contains(s.LastError, "HTTP 500") ||
			s.TotalFailures < 6 || s.InFlight == 0 || s.Lag == 0 || !s.LastSuccess.IsZero() {
			t.Errorf("bridge stats while down = %+v", s)
		}
		if got := gauge(t, metrics, "switchboard_appservice_up", "bridge"); got != 0 {
			t.Errorf("switchboard_appservice_up{bridge} = %v while down", got)
		}
		waitFor(t, "the dead appservice to fail", func() bool { return stat(p, "dead").Failures >= 3 })
		if s := stat(p, "dead"); s.State != appservice.StateDown || !strings.Contains(s.LastError, "refused") {
			t.Errorf("dead stats = %+v", s)
		}
		if s := stat(p, "nourl"); s.State != appservice.StateNoURL {
			t.Errorf("nourl stats = %+v", s)
		}
		if n := logs.count("Appservice unreachable", "bridge"); n != 1 {
			t.Errorf("bridge reported unreachable %d times in the logs, want once", n)
		}
		if n := logs.count("Appservice unreachable", "dead"); n != 1 {
			t.Errorf("dead reported unreachable %d times in the logs, want once", n)
		}

		bridge.setMode("ok")
		p.Retry("bridge")
		last := send(t, ghost, room, "after recovery")
		bridge.waitEvent(t, last)
		if got := len(bridge.eventIDs()); got != 3 {
			t.Errorf("bridge received %d events, want 3", got)
		}
		if n := logs.count("Appservice reachable again", "bridge"); n != 1 {
			t.Errorf("bridge reported its recovery %d times, want once", n)
		}
		if n := logs.count("Appservice unreachable", "bridge"); n != 1 {
			t.Errorf("bridge reported unreachable %d times in the logs, want once", n)
		}
		waitFor(t, "bridge stats to show it up", func() bool {
			s := stat(p, "bridge")
			return s.State == appservice.StateUp && s.Failures == 0 && !s.LastSuccess.IsZero() && s.DownSince.IsZero()
		})
		if got := gauge(t, metrics, "switchboard_appservice_up", "bridge"); got != 1 {
			t.Errorf("switchboard_appservice_up{bridge} = %v after recovery", got)
		}
		if strings.Contains(logs.buf.String(), hsToken) {
			t.Error("the hs_token appears in the logs")
		}
	})
}

// gauge returns the value of one appservice's gauge.
func gauge(t *testing.T, g prometheus.Gatherer, name, asID string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "appservice" && l.GetValue() == asID {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s{appservice=%q}", name, asID)
	return 0
}

// A reload starts new appservices from the current stream position, stops
// removed ones and keeps the queue of the others.
func TestPusherSetRegistry(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		a, b := srv.NewUser("_alpha_ghost"), srv.NewUser("_beta_ghost")
		roomA, roomB := createRoom(t, a), createRoom(t, b)
		recvA, recvB := newReceiver(t, "ok"), newReceiver(t, "ok")
		alpha, beta := regFile("alpha", recvA.srv.URL, ""), regFile("beta", recvB.srv.URL, "")
		regA := loadRegistry(t, map[string]string{"alpha.yaml": alpha})
		recvA.use(regA, "alpha")
		p := newPusher(t, srv, regA, testLog(t))
		first := send(t, a, roomA, "alpha 1")
		recvA.waitEvent(t, first)
		send(t, b, roomB, "beta before its registration")

		regAB := loadRegistry(t, map[string]string{"alpha.yaml": alpha, "beta.yaml": beta})
		recvB.use(regAB, "beta")
		p.SetRegistry(regAB)
		second := send(t, a, roomA, "alpha 2")
		betaEvt := send(t, b, roomB, "beta 1")
		recvA.waitEvent(t, second)
		recvB.waitEvent(t, betaEvt)
		if got := recvB.eventIDs(); !slices.Equal(got, []id.EventID{betaEvt}) {
			t.Errorf("beta received %v, want only what followed its registration", got)
		}
		if got := recvA.requests(); len(got) != 2 || got[1].txnID != "2" {
			t.Errorf("alpha's transactions %+v, want 1 and 2", got)
		}

		regB := loadRegistry(t, map[string]string{"beta.yaml": beta})
		p.SetRegistry(regB)
		send(t, a, roomA, "alpha after removal")
		betaLast := send(t, b, roomB, "beta 2")
		recvB.waitEvent(t, betaLast)
		if got := len(recvA.eventIDs()); got != 2 {
			t.Errorf("alpha received %d events after its removal, want 2 in all", got)
		}
		if ids := statIDs(p); !slices.Equal(ids, []string{"beta"}) {
			t.Errorf("stats list %v", ids)
		}
	})
}

func statIDs(p *appservice.Pusher) []string {
	var out []string
	for _, s := range p.Stats() {
		out = append(out, s.ID)
	}
	return out
}
