package bridge

import (
	"time"
)

// StateName is the bridge's connection state, in the names mautrix bridges
// report (so dashboards that know those understand ours).
type StateName string

const (
	StateStarting            StateName = "STARTING"
	StateConnecting          StateName = "CONNECTING"
	StateConnected           StateName = "CONNECTED"
	StateTransientDisconnect StateName = "TRANSIENT_DISCONNECT"
	StateBadCredentials      StateName = "BAD_CREDENTIALS"
	StateUnknownError        StateName = "UNKNOWN_ERROR"
)

// State is the bridge's state and why.
type State struct {
	Name    StateName `json:"state_event"`
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"-"`
	// Timestamp is Since in Unix seconds, for JSON.
	Timestamp int64 `json:"timestamp"`
}

// SetState records the network's connection state (shown by the status
// command and the provisioning API, and logged when it changes).
func (b *Bridge) SetState(name StateName, message string) {
	b.mu.Lock()
	changed := b.state.Name != name || b.state.Message != message
	if changed {
		now := time.Now()
		b.state = State{Name: name, Message: message, Since: now, Timestamp: now.Unix()}
	}
	b.mu.Unlock()
	if changed {
		b.AS.Metrics.SetState(string(name))
		b.Log.Info().Str("state", string(name)).Str("state_message", message).Msg("Bridge state changed")
	}
}

// State returns the bridge's state.
func (b *Bridge) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}
