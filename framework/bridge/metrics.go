package bridge

import "time"

// observeRemote and observeMatrix count a bridged message (remote → Matrix
// and Matrix → remote) and its latency in the appservice's metrics.
func (b *Bridge) observeRemote(start time.Time, err error) {
	b.AS.Metrics.RemoteToMatrix(outcome(err), time.Since(start))
}

func (b *Bridge) observeMatrix(start time.Time, err error) {
	b.AS.Metrics.MatrixToRemote(outcome(err), time.Since(start))
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case err == errRefused:
		return "refused"
	default:
		return "failed"
	}
}
