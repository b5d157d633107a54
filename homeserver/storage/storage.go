// Package storage is the homeserver's SQL layer: one schema and one set of
// queries for SQLite and PostgreSQL (through go.mau.fi/util/dbutil), with
// versioned upgrades in upgrades/. Dialect differences live in the upgrade
// files and in Open; queries use $N placeholders, which dbutil rewrites for
// SQLite.
package storage

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	_ "github.com/lib/pq"
	_ "github.com/mattn/go-sqlite3"
	"github.com/rs/zerolog"
	"github.com/switchboard-im/switchboard/internal/dbopen"
	"go.mau.fi/util/dbutil"
)

//go:embed upgrades/*.sql
var upgrades embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgrades, "upgrades").Finish()

// DB is the homeserver database.
type DB struct {
	*dbutil.Database

	// lookupToken is prepared once: it runs on every authenticated request,
	// and unprepared PostgreSQL spent 4× longer planning it than running it.
	lookupToken *sql.Stmt
	// writeMu queues this process's SQLite writers (writelock.go).
	writeMu sync.Mutex
}

// ErrNotFound is returned by lookups that found no row.
var ErrNotFound = errors.New("not found")

// Open connects to the database named by a config "database" value
// ("sqlite:FILE" relative to dataDir, or "postgres://…") and upgrades its
// schema to the latest version.
func Open(ctx context.Context, uri, dataDir string, maxConns int, log zerolog.Logger) (*DB, error) {
	raw, err := dbopen.Open(ctx, dbopen.Options{URI: uri, DataDir: dataDir, MaxConns: maxConns, Owner: "switchboard-homeserver", Log: log})
	if err != nil {
		return nil, err
	}
	raw.UpgradeTable = upgradeTable
	if err := raw.Upgrade(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("database: upgrade schema: %w", err)
	}
	db := &DB{Database: raw}
	if err := db.EnsureSearchIndex(ctx, log); err != nil {
		raw.Close()
		return nil, fmt.Errorf("database: %w", err)
	}
	if db.lookupToken, err = db.prepare(ctx, lookupAccessTokenQuery); err != nil {
		raw.Close()
		return nil, fmt.Errorf("database: %w", err)
	}
	return db, nil
}

// prepare makes a prepared statement from a $N-style query. database/sql
// re-prepares it per connection as needed.
func (db *DB) prepare(ctx context.Context, query string) (*sql.Stmt, error) {
	if db.Dialect == dbutil.SQLite {
		query = positionalParam.ReplaceAllString(query, "?$1")
	}
	stmt, err := db.RawDB.PrepareContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare statement: %w", err)
	}
	return stmt, nil
}

var positionalParam = regexp.MustCompile(`\$(\d+)`)

// Close closes prepared statements and the connection pool.
func (db *DB) Close() error {
	if db.lookupToken != nil {
		db.lookupToken.Close()
	}
	return db.Database.Close()
}

func nowMS() int64 { return time.Now().UnixMilli() }

// queryList runs a query and reads every row with scan (dbutil's row
// iterator); what names the read in errors.
func queryList[T any](ctx context.Context, db *DB, what string, scan dbutil.ConvertRowFn[T], query string, args ...any) ([]T, error) {
	list, err := scan.NewRowIter(db.Query(ctx, query, args...)).AsList()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return list, nil
}

// querySet runs a query of one column and returns its values as a set;
// what names the read in errors.
func querySet[K comparable](ctx context.Context, db *DB, what, query string, args ...any) (map[K]bool, error) {
	set := map[K]bool{}
	if err := addToSet(ctx, db, set, what, query, args...); err != nil {
		return nil, err
	}
	return set, nil
}

// addToSet runs a query of one column and adds its values to set; what
// names the read in errors.
func addToSet[K comparable](ctx context.Context, db *DB, set map[K]bool, what, query string, args ...any) error {
	rows := dbutil.ConvertRowFn[K](dbutil.ScanSingleColumn[K]).NewRowIter(db.Query(ctx, query, args...))
	if err := rows.Iter(func(v K) (bool, error) { set[v] = true; return true, nil }); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
