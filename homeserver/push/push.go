// Package push owns push rules: the spec's server-default rule set (taken
// verbatim from the spec's "Predefined Rules" into defaults.json) and, as
// the push issue lands, user rules, evaluation and pushers.
package push

import (
	_ "embed"
	"encoding/json"
	"strings"

	"maunium.net/go/mautrix/id"
)

//go:embed defaults.json
var defaultsJSON string

// userIDPlaceholder is how the spec writes "this user" in default rules.
const userIDPlaceholder = "[the user's Matrix ID]"

// DefaultRuleset returns the server-default push rules for a user, in the
// /pushrules "global" format.
func DefaultRuleset(userID id.UserID) json.RawMessage {
	quoted, _ := json.Marshal(string(userID))
	// The placeholder sits inside a JSON string; substitute the escaped ID
	// without its quotes.
	return json.RawMessage(strings.ReplaceAll(defaultsJSON, userIDPlaceholder, string(quoted[1:len(quoted)-1])))
}
