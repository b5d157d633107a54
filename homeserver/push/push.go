// Package push owns push notifications (spec: "Push Notifications"): the
// server-default rules (taken verbatim from the spec's "Predefined Rules"
// into defaults.json), each user's rules as the defaults merged with what
// they changed (rules.go), the evaluation of rules against events
// (eval.go, cache.go), the worker that evaluates every new event for the
// room's local members and stores their notifications (worker.go), and
// delivery to push gateways through HTTP pushers (pusher.go, gateway.go).
//
// Not done: badge-only pushes (counts without an event) when the user
// reads, and email pushers.
package push

import (
	_ "embed"
)

//go:embed defaults.json
var defaultsJSON string

// userIDPlaceholder is how the spec writes "this user" in default rules.
const userIDPlaceholder = "[the user's Matrix ID]"
