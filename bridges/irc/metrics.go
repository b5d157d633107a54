package irc

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// IRC metrics, served with the framework's at /metrics on the appservice
// listener, each series labelled with the appservice and the network:
//
//	switchboard_irc_network_up                       1 while the bot is connected
//	switchboard_irc_connections{kind}                bot | puppet, connected now
//	switchboard_irc_puppets                          Matrix users with a puppet (connected or not)
//	switchboard_irc_send_queue_lines{kind}           lines waiting for flood control, all connections
//	switchboard_irc_send_queue_longest_lines{kind}   the longest queue of one connection
//	switchboard_irc_lag_seconds                      the bot's last PING round trip
//	switchboard_irc_connects_total{kind,outcome}     ok | error
//	switchboard_irc_disconnects_total{kind}
//	switchboard_irc_nicks_reclaiming                 puppets waiting to get their nick back
//
// Gauges are read from the connections at scrape time. One collector
// serves every IRC bridge of the process (tests run several).
var metrics = newIRCCollector()

type ircCollector struct {
	mu    sync.Mutex
	cores map[*core]bool

	up, conns, puppets, queue, longest, lag, reclaiming *prometheus.Desc
	connects, disconnects                               *prometheus.CounterVec
}

func newIRCCollector() *ircCollector {
	labels := []string{"appservice", "network"}
	desc := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("switchboard_irc_"+name, help, append(labels[:2:2], extra...), nil)
	}
	c := &ircCollector{
		cores:      map[*core]bool{},
		up:         desc("network_up", "1 while the bridge bot is connected to the network."),
		conns:      desc("connections", "IRC connections that are registered now, by kind (bot, puppet).", "kind"),
		puppets:    desc("puppets", "Matrix users with a puppet on the network, connected or not."),
		queue:      desc("send_queue_lines", "Lines waiting for flood control, summed over the connections of a kind.", "kind"),
		longest:    desc("send_queue_longest_lines", "The longest send queue of one connection of a kind.", "kind"),
		lag:        desc("lag_seconds", "The bot connection's last PING round trip."),
		reclaiming: desc("nicks_reclaiming", "Puppets that got another nick than the one wanted and wait to get it back."),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_irc_connects_total", Help: "Connection attempts that reached registration, by kind and outcome (ok, error).",
		}, []string{"appservice", "network", "kind", "outcome"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_irc_disconnects_total", Help: "Registered connections that ended, by kind.",
		}, []string{"appservice", "network", "kind"}),
	}
	prometheus.MustRegister(c)
	return c
}

func (m *ircCollector) add(c *core) {
	m.mu.Lock()
	m.cores[c] = true
	m.mu.Unlock()
}

func (m *ircCollector) remove(c *core) {
	m.mu.Lock()
	delete(m.cores, c)
	m.mu.Unlock()
}

func (m *ircCollector) connect(n *network, kind string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.connects.WithLabelValues(n.c.cfg.ID, n.cfg.ID, kind, outcome).Inc()
}

func (m *ircCollector) disconnect(n *network, kind string) {
	m.disconnects.WithLabelValues(n.c.cfg.ID, n.cfg.ID, kind).Inc()
}

func (m *ircCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.up, m.conns, m.puppets, m.queue, m.longest, m.lag, m.reclaiming} {
		ch <- d
	}
	m.connects.Describe(ch)
	m.disconnects.Describe(ch)
}

func (m *ircCollector) Collect(ch chan<- prometheus.Metric) {
	m.connects.Collect(ch)
	m.disconnects.Collect(ch)
	m.mu.Lock()
	cores := make([]*core, 0, len(m.cores))
	for c := range m.cores {
		cores = append(cores, c)
	}
	m.mu.Unlock()
	for _, c := range cores {
		for _, n := range c.order {
			m.collectNetwork(ch, n)
		}
	}
}

func (m *ircCollector) collectNetwork(ch chan<- prometheus.Metric, n *network) {
	as, id := n.c.cfg.ID, n.cfg.ID
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{as, id}, extra...)...)
	}
	up := 0.0
	if n.isUp() {
		up = 1
	}
	gauge(m.up, up)
	gauge(m.conns, up, "bot")
	botQueue := float64(n.bot.QueueLen())
	gauge(m.queue, botQueue, "bot")
	gauge(m.longest, botQueue, "bot")
	gauge(m.lag, n.bot.Lag().Seconds())

	puppets := n.allPuppets()
	connected, queued, longest := 0, 0, 0
	for _, p := range puppets {
		conn := p.conn.Load()
		if conn == nil || !conn.Connected() {
			continue
		}
		connected++
		q := conn.QueueLen()
		queued += q
		longest = max(longest, q)
	}
	gauge(m.conns, float64(connected), "puppet")
	gauge(m.puppets, float64(len(puppets)))
	gauge(m.queue, float64(queued), "puppet")
	gauge(m.longest, float64(longest), "puppet")
	n.mu.Lock()
	reclaiming := len(n.reclaim)
	n.mu.Unlock()
	gauge(m.reclaiming, float64(reclaiming))
}
