//go:build !unix

package testdb

import (
	"errors"
	"os/exec"
	"os/user"
)

// Switching users is only needed when tests run as root, which is Unix-only.

func runAsUser(*exec.Cmd, *user.User) error {
	return errors.New("running as another user is not supported on this OS")
}

func reachable(string, *user.User) error { return nil }

func freeBytes(string) (uint64, error) {
	return 0, errors.New("free space unknown on this OS")
}
