package testdb

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindBinaries(t *testing.T) {
	fakeInstall := func(t *testing.T, dir string, names ...string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	noPath := func(string) (string, error) { return "", errors.New("not on PATH") }
	all := []string{"initdb", "pg_ctl", "postgres"}

	t.Run("highest complete Debian version", func(t *testing.T) {
		root := t.TempDir()
		fakeInstall(t, filepath.Join(root, "9.6", "bin"), all...)
		fakeInstall(t, filepath.Join(root, "13", "bin"), all...)
		fakeInstall(t, filepath.Join(root, "17", "bin"), "pg_ctl") // only the client package
		fakeInstall(t, filepath.Join(root, "notaversion", "bin"), all...)
		got, err := findBinaries(root, noPath)
		if want := filepath.Join(root, "13", "bin"); err != nil || got != want {
			t.Fatalf("findBinaries = %q, %v; want %q", got, err, want)
		}
	})
	t.Run("PATH when Debian dir is absent", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "bin")
		fakeInstall(t, bin, all...)
		lookPath := func(name string) (string, error) { return filepath.Join(bin, name), nil }
		got, err := findBinaries(filepath.Join(t.TempDir(), "missing"), lookPath)
		if err != nil || got != bin {
			t.Fatalf("findBinaries = %q, %v; want %q", got, err, bin)
		}
	})
	t.Run("nothing installed", func(t *testing.T) {
		_, err := findBinaries(t.TempDir(), noPath)
		if !errors.Is(err, errNoPostgres) {
			t.Fatalf("err = %v, want errNoPostgres", err)
		}
		if !strings.Contains(err.Error(), "apt-get install postgresql") {
			t.Errorf("message %q does not say how to install", err)
		}
	})
}

func TestDBName(t *testing.T) {
	long := "TestSomething/with a very long subtest name that goes on and on/" + strings.Repeat("x", 80)
	a, b := dbName(long), dbName(long)
	if a == b {
		t.Fatalf("dbName gave %q twice", a)
	}
	for _, n := range []string{a, b} {
		if len(n) > 63 {
			t.Errorf("dbName %q is %d bytes, PostgreSQL truncates at 63", n, len(n))
		}
		if strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("dbName %q has characters needing care", n)
		}
	}
}
