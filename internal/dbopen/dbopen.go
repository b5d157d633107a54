// Package dbopen opens the databases of Switchboard's components from one
// URI syntax — "sqlite:PATH" (the embedded default) or "postgres://…" — so
// the homeserver, the framework's bridges and bots all read the same
// config value the same way and open SQLite with the same pragmas.
package dbopen

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
)

// Split splits a database URI into a dbutil dialect ("sqlite3" or
// "postgres") and a driver DSN (for SQLite: the file path as written).
func Split(uri string) (dialect, dsn string, err error) {
	switch {
	case strings.HasPrefix(uri, "sqlite:"):
		path := strings.TrimPrefix(uri, "sqlite:")
		path = strings.TrimPrefix(path, "//")
		if path == "" {
			return "", "", errors.New("sqlite: needs a file path, e.g. sqlite:switchboard.db")
		}
		return "sqlite3", path, nil
	case strings.HasPrefix(uri, "postgres://"), strings.HasPrefix(uri, "postgresql://"):
		if _, err := url.Parse(uri); err != nil {
			return "", "", fmt.Errorf("invalid PostgreSQL URI: %w", err)
		}
		return "postgres", uri, nil
	default:
		return "", "", fmt.Errorf("%q must start with sqlite: or postgres://", Redact(uri))
	}
}

// Redact hides a password in a database URI before it is printed.
func Redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.User == nil {
		return uri
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "REDACTED")
	}
	return u.String()
}

// sqliteDSN sets the pragmas every connection needs: WAL so readers never
// wait for the writer, foreign keys, fsync on commit (a crash loses no
// acknowledged write), a busy timeout, and BEGIN IMMEDIATE so a
// transaction that will write takes the lock up front instead of failing
// to upgrade it half-way.
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_foreign_keys", "on")
	q.Set("_synchronous", "FULL")
	q.Set("_busy_timeout", "15000")
	q.Set("_txlock", "immediate")
	return "file:" + path + "?" + q.Encode()
}

// Options say what Open opens.
type Options struct {
	URI string
	// DataDir is where a relative SQLite path lives.
	DataDir string
	// MaxConns caps open connections (0: 8 for SQLite, 32 for PostgreSQL).
	MaxConns int
	// Owner names the component in dbutil's owner check, so two components
	// cannot share one schema by mistake.
	Owner string
	Log   zerolog.Logger
}

// Open opens and pings the database. The caller sets UpgradeTable and
// calls Upgrade.
func Open(ctx context.Context, o Options) (*dbutil.Database, error) {
	dialect, dsn, err := Split(o.URI)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	maxConns := o.MaxConns
	if dialect == "sqlite3" {
		path := dsn
		if !filepath.IsAbs(path) {
			path = filepath.Join(o.DataDir, path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("database: create directory: %w", err)
		}
		dsn = sqliteDSN(path)
		if maxConns == 0 {
			maxConns = 8
		}
	} else if maxConns == 0 {
		maxConns = 32
	}
	db, err := dbutil.NewWithDialect(dsn, dialect)
	if err != nil {
		return nil, fmt.Errorf("database: open: %w", err)
	}
	db.RawDB.SetMaxOpenConns(maxConns)
	db.RawDB.SetMaxIdleConns(maxConns)
	db.RawDB.SetConnMaxIdleTime(5 * time.Minute)
	db.Owner = o.Owner
	db.Log = dbutil.ZeroLogger(o.Log.With().Str("component", "database").Logger())
	pingCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := db.RawDB.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database: connect: %w", err)
	}
	return db, nil
}
