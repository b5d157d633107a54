// Package buildinfo says which Switchboard build is running.
package buildinfo

import (
	"fmt"
	"runtime"
)

// Version and Commit are set at link time by the Makefile
// (-ldflags "-X github.com/switchboard-im/switchboard/internal/buildinfo.Version=…").
var (
	Version = "0.1.0-dev"
	Commit  = "unknown"
)

// String is the one-line version banner.
func String() string {
	return fmt.Sprintf("switchboard %s (commit %s, %s %s/%s)", Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
