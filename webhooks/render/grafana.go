package render

import (
	"slices"
	"strings"
)

// renderGrafana renders a Grafana alerting webhook: the contact point of
// unified alerting (Alertmanager's body plus Grafana's links and values),
// or a legacy dashboard alert.
// https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/
func renderGrafana(o object, opts Options) (*Message, error) {
	if _, ok := o["alerts"].([]any); !ok && (o.has("ruleName") || o.has("ruleUrl")) {
		return renderGrafanaLegacy(o, opts)
	}
	n := readGroup(o)
	for _, v := range o.list("alerts") {
		a := asObject(v)
		if a == nil {
			continue
		}
		item := readAlert(a)
		item.values = grafanaValues(a.obj("values"))
		if item.values == "" {
			item.values = a.str("valueString")
		}
		item.links = []namedLink{
			{"Source", a.str("generatorURL")},
			{"Silence", a.str("silenceURL")},
			{"Dashboard", a.str("dashboardURL")},
			{"Panel", a.str("panelURL")},
			{"Image", a.str("imageURL")},
		}
		for _, l := range annotationLinks(item.annotations) {
			if !slices.ContainsFunc(item.links, func(have namedLink) bool { return have.label == l.label && validURL(have.url) }) {
				item.links = append(item.links, l)
			}
		}
		n.alerts = append(n.alerts, item)
	}
	return n.render(opts.MaxSize)
}

// grafanaValues writes the values of an alert's queries and expressions
// by reference ID: "B=44.23943737541908 C=1", each number as Grafana
// wrote it.
func grafanaValues(values object) string {
	scalars := make(map[string]string, len(values))
	for k, v := range values {
		if s := scalar(v); s != "" {
			scalars[k] = s
		}
	}
	return labelList(scalars, " ")
}

// Legacy alert states, as the heading shows them.
var legacyStates = map[string]*alertState{
	"alerting": stateFiring,
	"ok":       stateResolved,
	"no_data":  {"⚠️", "NO DATA", colourWarning},
	"pending":  {"⏳", "PENDING", colourWarning},
	"paused":   {"⏸️", "PAUSED", colourMuted},
}

// renderGrafanaLegacy renders Grafana's legacy (dashboard) alerting
// webhook: one rule, its state, message, matched values and links.
func renderGrafanaLegacy(o object, opts Options) (*Message, error) {
	state := o.str("state")
	n := &notification{
		resolved: state == "ok",
		name:     firstOf(o.str("ruleName"), o.str("title")),
		state:    legacyStates[state],
		// A rule's ID is stable across its notifications, and unique
		// within its organisation.
		groupKey: "grafana-legacy:" + joinNonEmpty("/", o.str("orgId"), firstOf(o.str("ruleId"), o.str("ruleUrl"), o.str("ruleName"))),
	}
	if n.state == nil {
		n.state = &alertState{"❔", strings.ToUpper(firstOf(state, "unknown")), colourMuted}
	}
	item := alertItem{
		resolved:    n.resolved,
		labels:      visibleLabels(o.stringMap("tags")),
		annotations: map[string]string{"description": o.str("message")},
		links:       []namedLink{{"Rule", o.str("ruleUrl")}, {"Image", o.str("imageUrl")}},
	}
	var matches []string
	for _, v := range o.list("evalMatches") {
		m := asObject(v)
		matches = append(matches, joinNonEmpty("=", m.str("metric"), m.str("value")))
	}
	item.values = joinNonEmpty(" ", matches...)
	n.alerts = []alertItem{item}
	return n.render(opts.MaxSize)
}
