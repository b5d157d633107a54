package bridge

import "time"

// observeRemote and observeMatrix count a bridged message (remote → Matrix
// and Matrix → remote) and its latency.
func (b *Bridge) observeRemote(start time.Time, err error) {}

func (b *Bridge) observeMatrix(start time.Time, err error) {}
