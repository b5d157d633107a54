// Package testpeer is how tests meet a missing peer (a server binary, a
// build feature, a JavaScript package): under CI=true, where .ci/run has
// installed everything, the test fails; elsewhere it is skipped with what
// to install.
package testpeer

import (
	"fmt"
	"os"
	"testing"
)

// Missing fails the test under CI=true and skips it otherwise, saying
// problem (what is missing and how to get it).
func Missing(t testing.TB, problem string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true, so this is a failure, not a skip)", problem)
	}
	t.Skip(problem)
}

// RequireBinary calls Missing unless bin exists; pkg is the Debian package
// that installs it.
func RequireBinary(t testing.TB, bin, pkg string) {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		Missing(t, fmt.Sprintf("%s is not installed (%s): apt-get install %s", pkg, bin, pkg))
	}
}
