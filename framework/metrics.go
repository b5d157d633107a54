package framework

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
)

// Metrics are an appservice's Prometheus metrics, every series labelled
// appservice="<registration ID>" (the label the homeserver's
// switchboard_appservice_* metrics use for the same appservice):
//
//	switchboard_bridge_transactions_total{outcome}        accepted | duplicate | failed
//	switchboard_bridge_events_received_total{type}
//	switchboard_bridge_events_handled_total{type,outcome} ok | error
//	switchboard_bridge_event_handler_duration_seconds{type}
//	switchboard_bridge_messages_total{direction,outcome}  matrix_to_remote | remote_to_matrix
//	switchboard_bridge_message_send_duration_seconds{direction}
//	switchboard_bridge_state{state}                       1 for the current state, 0 for the others seen
//
// Event types outside mautrix's known types (event.TypeMap) are counted as
// "other": anyone in a room can make up types, and every label value is a
// series kept forever. The methods do nothing on a nil *Metrics, so code
// that reports them needs no check.
//
// Metrics registers itself and serves nothing: whoever owns the registry
// serves it, e.g. promhttp.HandlerFor(registry, promhttp.HandlerOpts{}) on
// a metrics listener (promhttp.Handler() for the default registry), the
// way the homeserver serves its own.
type Metrics struct {
	txns          *prometheus.CounterVec
	received      *prometheus.CounterVec
	handled       *prometheus.CounterVec
	handleLatency *prometheus.HistogramVec
	messages      *prometheus.CounterVec
	sendLatency   *prometheus.HistogramVec
	state         *stateGauge

	knownTypes map[string]bool
}

// Outcomes of a transaction (switchboard_bridge_transactions_total).
const (
	txnAccepted  = "accepted"
	txnDuplicate = "duplicate"
	txnFailed    = "failed"
)

// Directions of switchboard_bridge_messages_total.
const (
	dirMatrixToRemote = "matrix_to_remote"
	dirRemoteToMatrix = "remote_to_matrix"
)

// latencyBuckets reach a minute: a send may include retries.
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// NewMetrics registers the metrics of the appservice appserviceID on reg
// (nil: prometheus.DefaultRegisterer). Calling it again for the same ID
// and registry (an appservice restarted in one process) returns metrics
// that share the first one's series. It panics when reg already holds
// different metrics under these names, like MustRegister.
func NewMetrics(reg prometheus.Registerer, appserviceID string) *Metrics {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	labels := prometheus.Labels{"appservice": appserviceID}
	const ns, sub = "switchboard", "bridge"
	m := &Metrics{
		txns: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "transactions_total", ConstLabels: labels,
			Help: "Transactions pushed by the homeserver: accepted, duplicate (accepted before) or failed (not stored; the homeserver resends it).",
		}, []string{"outcome"})),
		received: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "events_received_total", ConstLabels: labels,
			Help: "Events accepted from the homeserver, by event type.",
		}, []string{"type"})),
		handled: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "events_handled_total", ConstLabels: labels,
			Help: "Events handled, by event type and outcome (ok or error).",
		}, []string{"type", "outcome"})),
		handleLatency: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "event_handler_duration_seconds", ConstLabels: labels,
			Help:    "Time the handlers took for one event, by event type.",
			Buckets: latencyBuckets,
		}, []string{"type"})),
		messages: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "messages_total", ConstLabels: labels,
			Help: "Messages bridged, by direction (matrix_to_remote, remote_to_matrix) and outcome.",
		}, []string{"direction", "outcome"})),
		sendLatency: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "message_send_duration_seconds", ConstLabels: labels,
			Help:    "Time to deliver one bridged message to the other side, retries included, by direction.",
			Buckets: latencyBuckets,
		}, []string{"direction"})),
		state: register(reg, &stateGauge{desc: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "state"),
			"The bridge's connection state: 1 for the current one, 0 for the others it has been in.",
			[]string{"state"}, labels)}),
		knownTypes: make(map[string]bool, len(event.TypeMap)),
	}
	for t := range event.TypeMap {
		m.knownTypes[t.Type] = true
	}
	return m
}

// register registers c, or returns the collector already registered in
// its place.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(fmt.Errorf("framework: register metrics: %w", err))
}

func (m *Metrics) typeLabel(eventType string) string {
	if m.knownTypes[eventType] {
		return eventType
	}
	return "other"
}

// observeTransaction counts a transaction pushed by the homeserver and,
// when it was accepted, its events by type.
func (m *Metrics) observeTransaction(entries []*inboxEntry, fresh bool, err error) {
	if m == nil {
		return
	}
	switch {
	case err != nil:
		m.txns.WithLabelValues(txnFailed).Inc()
	case !fresh:
		m.txns.WithLabelValues(txnDuplicate).Inc()
	default:
		m.txns.WithLabelValues(txnAccepted).Inc()
		for _, e := range entries {
			m.received.WithLabelValues(m.typeLabel(gjson.GetBytes(e.raw, "type").Str)).Inc()
		}
	}
}

// ObserveHandled records that the handlers finished an event of
// eventType in dur; err non-nil counts it as an error.
func (m *Metrics) ObserveHandled(eventType string, dur time.Duration, err error) {
	if m == nil {
		return
	}
	t := m.typeLabel(eventType)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.handled.WithLabelValues(t, outcome).Inc()
	m.handleLatency.WithLabelValues(t).Observe(dur.Seconds())
}

// MatrixToRemote records a Matrix message sent (or not) to the remote
// network, dur being the time to deliver it. outcome is one of a small
// fixed set the bridge chooses ("ok", "error", "dropped",
// "rate_limited"…): each value is a series of its own.
func (m *Metrics) MatrixToRemote(outcome string, dur time.Duration) {
	m.message(dirMatrixToRemote, outcome, dur)
}

// RemoteToMatrix records a remote message sent (or not) to Matrix; see
// MatrixToRemote.
func (m *Metrics) RemoteToMatrix(outcome string, dur time.Duration) {
	m.message(dirRemoteToMatrix, outcome, dur)
}

func (m *Metrics) message(direction, outcome string, dur time.Duration) {
	if m == nil {
		return
	}
	m.messages.WithLabelValues(direction, outcome).Inc()
	m.sendLatency.WithLabelValues(direction).Observe(dur.Seconds())
}

// SetState sets the bridge's connection state: a small fixed set, e.g.
// mautrix's bridge state names (CONNECTING, CONNECTED,
// TRANSIENT_DISCONNECT, BAD_CREDENTIALS, UNKNOWN_ERROR…).
func (m *Metrics) SetState(state string) {
	if m == nil {
		return
	}
	m.state.set(state)
}

// stateGauge is a gauge per state that is 1 for the current state and 0
// for the others seen; a scrape never sees two states at 1 or none.
type stateGauge struct {
	desc *prometheus.Desc

	mu      sync.Mutex
	current string
	seen    []string
}

func (g *stateGauge) set(state string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.current = state
	if !slices.Contains(g.seen, state) {
		g.seen = append(g.seen, state)
	}
}

func (g *stateGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *stateGauge) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.seen {
		v := 0.0
		if s == g.current {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v, s)
	}
}
