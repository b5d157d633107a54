package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseFlagsInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pos  []string
		adm  bool
	}{
		{[]string{"alice", "--admin"}, []string{"alice"}, true},
		{[]string{"--admin", "alice"}, []string{"alice"}, true},
		{[]string{"alice"}, []string{"alice"}, false},
		// After "--" even flag-looking words are names.
		{[]string{"--", "--admin"}, []string{"--admin"}, false},
		{[]string{"alice", "--", "-x", "--admin"}, []string{"alice", "-x", "--admin"}, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		admin := fs.Bool("admin", false, "")
		pos, err := parseFlags(fs, tc.args)
		if err != nil || !slices.Equal(pos, tc.pos) || *admin != tc.adm {
			t.Errorf("%q: positional %q admin %v err %v; want %q %v", tc.args, pos, *admin, err, tc.pos, tc.adm)
		}
	}
}

func TestDefaultPublicURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:8008": "http://127.0.0.1:8008",
		"0.0.0.0:8448":   "http://127.0.0.1:8448",
		":8008":          "http://127.0.0.1:8008",
		"[::]:8008":      "http://127.0.0.1:8008",
		"[::1]:8008":     "http://[::1]:8008",
		"matrix.lan:80":  "http://matrix.lan:80",
	} {
		if got := defaultPublicURL(listen); got != want {
			t.Errorf("defaultPublicURL(%q) = %q, want %q", listen, got, want)
		}
	}
}

func TestNegativeTokenLimitsRefused(t *testing.T) {
	dir := t.TempDir()
	mustSB(t, cliOpts{}, "init", "--data", dir, "--listen", freeListen(t))
	for _, args := range [][]string{{"--uses", "-3"}, {"--expires", "-1h"}} {
		res := sb(t, append([]string{"registration-token", "create", "--data", dir}, args...)...)
		if res.code != 2 || !strings.Contains(res.stderr, "must not be negative") {
			t.Errorf("%v: %s", args, res)
		}
	}
}

// A bad environment override is reported as such by init, and init leaves
// no half-written data directory behind.
func TestInitWithBadEnvironment(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	res := sbWith(t, cliOpts{env: []string{"SWITCHBOARD_DATABASE=mysql://x"}}, "init", "--data", dir)
	if res.code != 0 {
		t.Fatalf("init must not read the environment: %s", res)
	}
	res = sbWith(t, cliOpts{env: []string{"SWITCHBOARD_DATABASE=mysql://x"}}, "user", "list", "--data", dir)
	if res.code != 1 || !strings.Contains(res.stderr, "database") || strings.Contains(res.stderr, "(bug)") {
		t.Fatalf("bad SWITCHBOARD_DATABASE: %s", res)
	}
	if _, err := os.Stat(filepath.Join(dir, "switchboard.db")); err == nil {
		t.Fatal("a database was created despite the bad override")
	}
}
