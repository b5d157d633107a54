package render

import (
	"net/url"
	"strings"

	"github.com/switchboard-im/switchboard/framework/format"
)

// The renderers write HTML with these helpers and escape every piece of
// payload text they put in it; Message.finish sanitises the result anyway.

var esc = format.EscapeHTML

// validURL reports whether s is an absolute http(s) URL: the only links
// worth showing from a payload, and the only avatars delivery can fetch.
func validURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// link writes an anchor labelled with HTML (already escaped), or just the
// label when href is not a web or mail link.
func link(href, labelHTML string) string {
	if labelHTML == "" {
		labelHTML = esc(href)
	}
	if !validURL(href) && !strings.HasPrefix(strings.ToLower(href), "mailto:") {
		return labelHTML
	}
	return `<a href="` + esc(href) + `">` + labelHTML + `</a>`
}

// coloured writes HTML in a colour (#rrggbb), as the spec's
// data-mx-color attribute on span.
func coloured(colour, innerHTML string) string {
	if colour == "" {
		return innerHTML
	}
	return `<span data-mx-color="` + colour + `">` + innerHTML + `</span>`
}

// Colours of alert severities and of Slack's named attachment colours.
const (
	colourCritical = "#d32f2f"
	colourWarning  = "#f57c00"
	colourInfo     = "#1976d2"
	colourResolved = "#388e3c"
	colourMuted    = "#757575" // context and footers, as Slack greys them
)

// breakLines escapes text and turns its line breaks into <br>.
func breakLines(text string) string {
	return strings.ReplaceAll(esc(strings.TrimRight(text, "\n")), "\n", "<br>")
}

// joinNonEmpty joins the non-empty parts with sep.
func joinNonEmpty(sep string, parts ...string) string {
	kept := parts[:0:0]
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, sep)
}
