package dbopen

import (
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	for uri, want := range map[string]string{
		"sqlite:switchboard.db":           "sqlite3",
		"sqlite:///abs/path.db":           "sqlite3",
		"postgres://u:p@h/db":             "postgres",
		"postgresql://u@h/db?sslmode=off": "postgres",
	} {
		if got, _, err := Split(uri); err != nil || got != want {
			t.Errorf("%s: got %q, %v", uri, got, err)
		}
	}
	_, _, err := Split("mysql://root:hunter2@h/db")
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error must not leak the password: %v", err)
	}
}
