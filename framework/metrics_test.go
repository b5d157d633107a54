package framework

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// scrape fetches reg over HTTP as Prometheus does and returns the sample
// lines of the named metrics (histograms: of their _bucket, _sum and
// _count), in the order served.
//
// (prometheus/testutil would do, but it needs github.com/kylelemons/godebug
// listed in go.mod.)
func scrape(t *testing.T, reg prometheus.Gatherer, names ...string) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		metric, _, _ := strings.Cut(line, "{")
		metric, _, _ = strings.Cut(metric, " ")
		for _, name := range names {
			if metric == name || metric == name+"_bucket" || metric == name+"_sum" || metric == name+"_count" {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}

func compareLines(t *testing.T, got, want string) {
	t.Helper()
	if want = strings.TrimSpace(want); got != want {
		t.Errorf("scraped:\n%s\nwant:\n%s", got, want)
	}
}

func TestMetricsScraped(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "irc")

	m.observeTransaction([]*inboxEntry{
		{raw: []byte(`{"type":"m.room.message","room_id":"!a:x"}`)},
		{raw: []byte(`{"type":"m.room.message","room_id":"!a:x"}`)},
		{raw: []byte(`{"type":"m.room.member","room_id":"!a:x","state_key":"@u:x"}`)},
		{raw: []byte(`{"type":"com.example.made.up","room_id":"!a:x"}`)},
	}, true, nil)
	m.observeTransaction(nil, false, nil)
	m.observeTransaction(nil, false, errors.New("database is locked"))
	m.ObserveHandled("m.room.message", 20*time.Millisecond, nil)
	m.ObserveHandled("m.room.message", 3*time.Second, errors.New("handler panicked"))
	m.ObserveHandled("org.example.spam.1234", time.Millisecond, nil)
	m.MatrixToRemote("ok", 125*time.Millisecond)
	m.MatrixToRemote("ok", 250*time.Millisecond)
	m.MatrixToRemote("rate_limited", 0)
	m.RemoteToMatrix("ok", 50*time.Millisecond)
	m.SetState("CONNECTING")
	m.SetState("CONNECTED")

	// What Prometheus sees when it scrapes.
	compareLines(t, scrape(t, reg, "switchboard_bridge_events_handled_total", "switchboard_bridge_events_received_total",
		"switchboard_bridge_messages_total", "switchboard_bridge_state", "switchboard_bridge_transactions_total"), `
switchboard_bridge_events_handled_total{appservice="irc",outcome="error",type="m.room.message"} 1
switchboard_bridge_events_handled_total{appservice="irc",outcome="ok",type="m.room.message"} 1
switchboard_bridge_events_handled_total{appservice="irc",outcome="ok",type="other"} 1
switchboard_bridge_events_received_total{appservice="irc",type="m.room.member"} 1
switchboard_bridge_events_received_total{appservice="irc",type="m.room.message"} 2
switchboard_bridge_events_received_total{appservice="irc",type="other"} 1
switchboard_bridge_messages_total{appservice="irc",direction="matrix_to_remote",outcome="ok"} 2
switchboard_bridge_messages_total{appservice="irc",direction="matrix_to_remote",outcome="rate_limited"} 1
switchboard_bridge_messages_total{appservice="irc",direction="remote_to_matrix",outcome="ok"} 1
switchboard_bridge_state{appservice="irc",state="CONNECTED"} 1
switchboard_bridge_state{appservice="irc",state="CONNECTING"} 0
switchboard_bridge_transactions_total{appservice="irc",outcome="accepted"} 1
switchboard_bridge_transactions_total{appservice="irc",outcome="duplicate"} 1
switchboard_bridge_transactions_total{appservice="irc",outcome="failed"} 1
`)

	// Histograms: one observation per call, in the right bucket.
	compareLines(t, scrape(t, reg, "switchboard_bridge_event_handler_duration_seconds"), `
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="0.005"} 0
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="0.01"} 0
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="0.025"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="0.05"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="0.1"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="0.25"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="0.5"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="1"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="2.5"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="5"} 2
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="10"} 2
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="30"} 2
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="60"} 2
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="m.room.message",le="+Inf"} 2
switchboard_bridge_event_handler_duration_seconds_sum{appservice="irc",type="m.room.message"} 3.02
switchboard_bridge_event_handler_duration_seconds_count{appservice="irc",type="m.room.message"} 2
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="0.005"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="0.01"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="0.025"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="0.05"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="0.1"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="0.25"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="0.5"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="1"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="2.5"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="5"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="10"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="30"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="60"} 1
switchboard_bridge_event_handler_duration_seconds_bucket{appservice="irc",type="other",le="+Inf"} 1
switchboard_bridge_event_handler_duration_seconds_sum{appservice="irc",type="other"} 0.001
switchboard_bridge_event_handler_duration_seconds_count{appservice="irc",type="other"} 1
`)
	compareLines(t, scrape(t, reg, "switchboard_bridge_message_send_duration_seconds"), `
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="0.005"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="0.01"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="0.025"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="0.05"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="0.1"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="0.25"} 3
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="0.5"} 3
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="1"} 3
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="2.5"} 3
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="5"} 3
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="10"} 3
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="30"} 3
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="60"} 3
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="matrix_to_remote",le="+Inf"} 3
switchboard_bridge_message_send_duration_seconds_sum{appservice="irc",direction="matrix_to_remote"} 0.375
switchboard_bridge_message_send_duration_seconds_count{appservice="irc",direction="matrix_to_remote"} 3
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="0.005"} 0
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="0.01"} 0
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="0.025"} 0
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="0.05"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="0.1"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="0.25"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="0.5"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="1"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="2.5"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="5"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="10"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="30"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="60"} 1
switchboard_bridge_message_send_duration_seconds_bucket{appservice="irc",direction="remote_to_matrix",le="+Inf"} 1
switchboard_bridge_message_send_duration_seconds_sum{appservice="irc",direction="remote_to_matrix"} 0.05
switchboard_bridge_message_send_duration_seconds_count{appservice="irc",direction="remote_to_matrix"} 1
`)
}

func TestMetricsRegisteredTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	first := NewMetrics(reg, "slack")
	first.ObserveHandled("m.room.message", 0, nil)
	first.SetState("CONNECTED")

	// Restarted in the same process: no panic, the same series go on.
	again := NewMetrics(reg, "slack")
	again.ObserveHandled("m.room.message", 0, nil)
	again.SetState("TRANSIENT_DISCONNECT")

	// Another appservice in the same registry has series of its own.
	other := NewMetrics(reg, "webhooks")
	other.ObserveHandled("m.room.message", 0, nil)
	compareLines(t, scrape(t, reg, "switchboard_bridge_events_handled_total", "switchboard_bridge_state"), `
switchboard_bridge_events_handled_total{appservice="slack",outcome="ok",type="m.room.message"} 2
switchboard_bridge_events_handled_total{appservice="webhooks",outcome="ok",type="m.room.message"} 1
switchboard_bridge_state{appservice="slack",state="CONNECTED"} 0
switchboard_bridge_state{appservice="slack",state="TRANSIENT_DISCONNECT"} 1
`)

	// A nil *Metrics (metrics off) does nothing.
	var off *Metrics
	off.ObserveHandled("m.room.message", time.Second, nil)
	off.MatrixToRemote("ok", 0)
	off.RemoteToMatrix("ok", 0)
	off.SetState("CONNECTED")
	off.observeTransaction(nil, true, nil)
}

func TestMetricsDefaultRegisterer(t *testing.T) {
	// A fresh ID: the default registry outlives a run (-count) and may hold
	// other tests' appservices.
	asID := fmt.Sprintf("metrics-default-test-%d", time.Now().UnixNano())
	m := NewMetrics(nil, asID)
	m.RemoteToMatrix("ok", 0)
	want := `switchboard_bridge_messages_total{appservice="` + asID + `",direction="remote_to_matrix",outcome="ok"} 1`
	if got := scrape(t, prometheus.DefaultGatherer, "switchboard_bridge_messages_total"); !slices.Contains(strings.Split(got, "\n"), want) {
		t.Errorf("scraped:\n%s\nwant a line:\n%s", got, want)
	}
}
