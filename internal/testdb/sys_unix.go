//go:build unix

package testdb

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// runAsUser makes cmd run as u. Setting the credentials directly does what
// `runuser -u postgres --` does without going through PAM.
func runAsUser(cmd *exec.Cmd, u *user.User) error {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return fmt.Errorf("uid of %s: %w", u.Username, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return fmt.Errorf("gid of %s: %w", u.Username, err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)},
	}
	return nil
}

// reachable reports whether u can traverse every directory from / down to
// dir, which the server needs to reach its data dir below it. It goes by the
// permission bits of owner, primary group or others (supplementary groups
// and ACLs are not considered; they do not occur on temp dirs).
func reachable(dir string, u *user.User) error {
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		perm := fi.Mode().Perm()
		x := perm & 0o001 // others
		switch {
		case uint64(st.Uid) == uid:
			x = perm & 0o100
		case uint64(st.Gid) == gid:
			x = perm & 0o010
		}
		if x == 0 {
			return fmt.Errorf("%s: user %s cannot traverse %s (mode %v)", dir, u.Username, d, perm)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// freeBytes returns the space available to unprivileged users on the file
// system holding path.
func freeBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
