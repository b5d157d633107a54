package framework

import "time"

// SetDrainTimeout shortens how long Stop waits for handlers.
func SetDrainTimeout(d time.Duration) (restore func()) {
	old := drainTimeout
	drainTimeout = d
	return func() { drainTimeout = old }
}
