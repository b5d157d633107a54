package render

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// notification is one alert notification in the shape that Alertmanager
// and Grafana share: a group of alerts, firing or resolved, each with
// labels, annotations and links. Both formats are read into it and
// rendered by it, so that alerts look the same whichever sent them.
type notification struct {
	resolved bool              // every alert of the group has resolved
	groupKey string            // what identifies the group across notifications
	name     string            // what the group is about, for the heading
	group    map[string]string // the labels the group is made by
	common   map[string]string // the labels all its alerts share
	alerts   []alertItem
	// truncated counts the alerts the sender left out (max_alerts).
	truncated int
	// state replaces FIRING or RESOLVED in the heading, for Grafana's
	// legacy states (no data, pending, paused).
	state *alertState
}

type alertItem struct {
	resolved    bool
	labels      map[string]string
	annotations map[string]string
	startsAt    time.Time
	endsAt      time.Time
	values      string // Grafana's evaluated values, as the sender wrote them
	links       []namedLink
}

type namedLink struct{ label, url string }

// alertState is how a heading shows a status.
type alertState struct {
	emoji, word, colour string
}

var (
	stateFiring   = &alertState{"🔥", "FIRING", ""} // coloured by severity
	stateResolved = &alertState{"✅", "RESOLVED", colourResolved}
)

// renderAlertmanager renders Alertmanager's webhook_config body, version 4:
// https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
func renderAlertmanager(o object, opts Options) (*Message, error) {
	n := readGroup(o)
	externalURL := o.str("externalURL")
	for _, v := range o.list("alerts") {
		a := asObject(v)
		if a == nil {
			continue
		}
		item := readAlert(a)
		item.links = append(item.links, namedLink{"Source", a.str("generatorURL")})
		if validURL(externalURL) && len(item.labels) > 0 {
			item.links = append(item.links, namedLink{"Silence", silenceURL(externalURL, item.labels)})
		}
		item.links = append(item.links, annotationLinks(item.annotations)...)
		n.alerts = append(n.alerts, item)
	}
	return n.render(opts.MaxSize)
}

// readGroup reads the members of a notification that Alertmanager and
// Grafana share, and the group's name from its labels.
func readGroup(o object) *notification {
	n := &notification{
		resolved: o.str("status") == "resolved",
		groupKey: o.str("groupKey"),
		group:    visibleLabels(o.stringMap("groupLabels")),
		common:   visibleLabels(o.stringMap("commonLabels")),
	}
	n.truncated, _ = strconv.Atoi(o.str("truncatedAlerts"))
	n.name = n.common["alertname"]
	if n.name == "" {
		n.name = labelList(n.group, ", ")
	}
	return n
}

// readAlert reads the members of an alert that both formats share.
func readAlert(a object) alertItem {
	return alertItem{
		resolved:    a.str("status") == "resolved",
		labels:      visibleLabels(a.stringMap("labels")),
		annotations: visibleLabels(a.stringMap("annotations")),
		startsAt:    parseTime(a.str("startsAt")),
		endsAt:      parseTime(a.str("endsAt")),
	}
}

// visibleLabels leaves out labels whose names start with "__": Grafana's
// and Prometheus's internal ones, which mean nothing to a reader.
func visibleLabels(m map[string]string) map[string]string {
	for k := range m {
		if strings.HasPrefix(k, "__") {
			delete(m, k)
		}
	}
	return m
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{} // Alertmanager writes "0001-01-01T00:00:00Z" for "not yet"
	}
	return t
}

// Annotations that become links rather than text; the first present of
// each label wins.
var linkAnnotations = []struct{ label, key string }{
	{"Runbook", "runbook_url"},
	{"Runbook", "runbook"},
	{"Dashboard", "dashboard_url"},
	{"Dashboard", "dashboard"},
}

// Annotations shown in their own place; the rest are listed as key: value.
var textAnnotations = []string{"summary", "description", "message"}

func annotationLinks(annotations map[string]string) []namedLink {
	var links []namedLink
	for _, a := range linkAnnotations {
		if u := annotations[a.key]; validURL(u) && !slices.ContainsFunc(links, func(l namedLink) bool { return l.label == a.label }) {
			links = append(links, namedLink{a.label, u})
		}
	}
	return links
}

// silenceURL links to Alertmanager's form for a new silence, filled in
// with matchers for every label of the alert.
func silenceURL(externalURL string, labels map[string]string) string {
	var matchers []string
	for _, k := range sortedKeys(labels) {
		v := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(labels[k])
		matchers = append(matchers, k+`="`+v+`"`)
	}
	filter := url.QueryEscape("{" + strings.Join(matchers, ",") + "}")
	// The filter is read from the URL's fragment by Alertmanager's UI,
	// which does not take '+' for a space.
	filter = strings.ReplaceAll(filter, "+", "%20")
	return strings.TrimRight(externalURL, "/") + "/#/silences/new?filter=" + filter
}

// sortedKeys returns the keys of labels, alertname first.
func sortedKeys(labels map[string]string) []string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == "alertname":
			return -1
		case b == "alertname":
			return 1
		}
		return strings.Compare(a, b)
	})
	return keys
}

func labelList(labels map[string]string, sep string) string {
	var parts []string
	for _, k := range sortedKeys(labels) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, sep)
}

// severityColour is the colour of a severity label's value. Alerting
// setups name their levels in many ways; these are the common ones. An
// alert without a known severity is firing all the same, so it is red.
func severityColour(severity string) string {
	switch strings.ToLower(severity) {
	case "warning", "warn", "medium", "average", "minor", "p2", "p3", "sev2", "sev3":
		return colourWarning
	case "info", "informational", "information", "low", "notice", "none", "debug", "p4", "p5", "sev4", "sev5":
		return colourInfo
	}
	return colourCritical
}

var colourRank = map[string]int{colourInfo: 1, colourWarning: 2, colourCritical: 3}

// render writes the notification: a heading with the status, the number
// of alerts and the group's name, the labels all alerts share, and each
// alert, firing ones first. Alerts are listed while the HTML stays within
// half of maxSize (the body takes about as much again); the rest are
// counted.
func (n *notification) render(maxSize int) (*Message, error) {
	if len(n.alerts) == 0 {
		return nil, &Error{CodeInvalidPayload, "the notification has no alerts"}
	}
	if n.name == "" {
		n.name = alertNames(n.alerts)
	}
	slices.SortStableFunc(n.alerts, func(a, b alertItem) int {
		switch {
		case a.resolved == b.resolved:
			return 0
		case b.resolved:
			return -1
		}
		return 1
	})
	firing := 0
	colour := ""
	for _, a := range n.alerts {
		if !a.resolved {
			firing++
			if c := severityColour(a.labels["severity"]); colourRank[c] > colourRank[colour] {
				colour = c
			}
		}
	}
	state := n.state
	switch {
	case state != nil:
	case n.resolved:
		state = stateResolved
	default:
		state = stateFiring
	}
	if state.colour != "" {
		colour = state.colour
	}
	heading := state.emoji + " " + state.word
	if n.state == nil {
		count := firing
		if n.resolved {
			count = len(n.alerts)
		}
		heading += ":" + strconv.Itoa(count)
	}
	var b strings.Builder
	// A heading element would put "####" in front of the body, which is
	// what notifications show.
	b.WriteString("<p><strong>" + coloured(colour, esc(heading)) + " " + esc(n.name) + "</strong></p>")

	multi := len(n.alerts) > 1
	if multi {
		// Labels all alerts share, less those the heading and each
		// alert already show.
		shared := make(map[string]string, len(n.common))
		for k, v := range n.common {
			if k != "alertname" && k != "severity" && n.group[k] != v {
				shared[k] = v
			}
		}
		if len(shared) > 0 {
			b.WriteString("<p>" + labelCodes(shared) + "</p>")
		}
	}

	var items []string
	size := jsonLen(b.String())
	for _, a := range n.alerts {
		h := n.item(a, multi)
		if len(items) > 0 && size+jsonLen(h) > maxSize/2 {
			break
		}
		size += jsonLen(h)
		items = append(items, h)
	}
	if multi {
		b.WriteString("<ul><li>" + strings.Join(items, "</li><li>") + "</li></ul>")
	} else {
		b.WriteString("<p>" + items[0] + "</p>")
	}
	if hidden := len(n.alerts) - len(items); hidden > 0 {
		b.WriteString("<p><em>" + countAlerts(hidden, "more alert", "more alerts") + " not shown.</em></p>")
	}
	if n.truncated > 0 {
		b.WriteString("<p><em>" + countAlerts(n.truncated, "more alert was", "more alerts were") + " left out by the sender (max_alerts).</em></p>")
	}
	return &Message{HTML: b.String(), AlertKey: n.groupKey, Resolved: n.resolved}, nil
}

// alertNames names a group that no label names: by its alerts' names,
// the first three of them.
func alertNames(alerts []alertItem) string {
	var names []string
	for _, a := range alerts {
		if name := a.labels["alertname"]; name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) > 3 {
		names = append(names[:3], "…")
	}
	return strings.Join(names, ", ")
}

func countAlerts(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// item writes one alert: its severity (or status), name and summary; its
// description and other annotations; its labels, less those the heading
// and the shared labels already show; its values; when it started or
// resolved; and its links.
func (n *notification) item(a alertItem, multi bool) string {
	var head []string
	severity := a.labels["severity"]
	switch {
	case a.resolved && multi:
		head = append(head, coloured(colourResolved, "<strong>RESOLVED</strong>"))
	case !a.resolved && (multi || severity != ""):
		head = append(head, coloured(severityColour(severity), "<strong>"+esc(strings.ToUpper(firstOf(severity, "firing")))+"</strong>"))
	}
	if name := a.labels["alertname"]; name != "" && name != n.name {
		head = append(head, "<strong>"+esc(name)+"</strong>")
	}
	if summary := a.annotations["summary"]; summary != "" {
		head = append(head, esc(summary))
	}
	lines := []string{strings.Join(head, " ")}
	if d := firstOf(a.annotations["description"], a.annotations["message"]); d != "" {
		lines = append(lines, breakLines(d))
	}
	for _, k := range sortedKeys(a.annotations) {
		if slices.Contains(textAnnotations, k) || slices.ContainsFunc(linkAnnotations, func(l struct{ label, key string }) bool {
			return l.key == k && validURL(a.annotations[k])
		}) {
			continue
		}
		lines = append(lines, "<em>"+esc(k)+":</em> "+breakLines(a.annotations[k]))
	}
	labels := make(map[string]string, len(a.labels))
	for k, v := range a.labels {
		if k == "alertname" || k == "severity" && !a.resolved || multi && k != "severity" && n.common[k] == v {
			continue
		}
		labels[k] = v
	}
	if len(labels) > 0 {
		lines = append(lines, labelCodes(labels))
	}
	if a.values != "" {
		lines = append(lines, "Values: <code>"+esc(a.values)+"</code>")
	}
	var footer []string
	switch {
	case a.resolved && !a.endsAt.IsZero():
		resolved := "Resolved " + formatTime(a.endsAt)
		if !a.startsAt.IsZero() && a.endsAt.After(a.startsAt) {
			resolved += " after " + formatDuration(a.endsAt.Sub(a.startsAt))
		}
		footer = append(footer, esc(resolved))
	case !a.startsAt.IsZero():
		footer = append(footer, esc("Since "+formatTime(a.startsAt)))
	}
	for _, l := range a.links {
		if validURL(l.url) {
			footer = append(footer, link(l.url, esc(l.label)))
		}
	}
	if len(footer) > 0 {
		lines = append(lines, strings.Join(footer, " · "))
	}
	return joinNonEmpty("<br>", lines...)
}

// labelCodes writes labels as key=value code spans, alertname first.
func labelCodes(labels map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(labels) {
		parts = append(parts, "<code>"+esc(k+"="+labels[k])+"</code>")
	}
	return strings.Join(parts, " ")
}

func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// formatDuration writes a duration to the largest two units: 45s, 12m,
// 1h5m, 3d2h.
func formatDuration(d time.Duration) string {
	d = d.Round(time.Second)
	day := 24 * time.Hour
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < day:
		return unitPair(int(d/time.Hour), "h", int(d%time.Hour/time.Minute), "m")
	}
	return unitPair(int(d/day), "d", int(d%day/time.Hour), "h")
}

func unitPair(a int, aUnit string, b int, bUnit string) string {
	s := strconv.Itoa(a) + aUnit
	if b > 0 {
		s += strconv.Itoa(b) + bUnit
	}
	return s
}
