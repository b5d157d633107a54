package syncapi

import (
	"slices"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// MatchFilter applies a filter's types, not_types, senders, not_senders
// and contains_url rules to an event (spec: "Filtering"); '*' in a type
// pattern matches any suffix.
func MatchFilter(f *mautrix.FilterPart, e *storage.Event) bool {
	if f == nil {
		return true
	}
	if f.Types != nil && !matchType(f.Types, e.Type) {
		return false
	}
	if matchType(f.NotTypes, e.Type) {
		return false
	}
	if f.Senders != nil && !slices.Contains(f.Senders, e.Sender) {
		return false
	}
	if slices.Contains(f.NotSenders, e.Sender) {
		return false
	}
	if f.ContainsURL != nil {
		hasURL := strings.Contains(string(rooms.ContentOf(e)), `"url"`)
		if hasURL != *f.ContainsURL {
			return false
		}
	}
	return true
}

func matchType(patterns []event.Type, evtType string) bool {
	for _, p := range patterns {
		if p.Type == evtType || (strings.HasSuffix(p.Type, "*") && strings.HasPrefix(evtType, strings.TrimSuffix(p.Type, "*"))) {
			return true
		}
	}
	return false
}
