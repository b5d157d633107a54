package storage

import (
	"context"
	"database/sql"

	"go.mau.fi/util/dbutil"
)

// SQLite has one writer at a time, and a writer that finds the database
// locked sleeps in SQLite's busy handler (1, 2, 5 … 100 ms steps) and only
// wins if the lock happens to be free when it wakes. Under a stream of
// room commits a small writer (an appservice queue update, a receipt)
// could wait seconds. So in this process writers queue on one mutex
// instead — Go's mutex hands over in arrival order once anyone has waited
// a millisecond — and the busy handler is left for other processes (the
// CLI). PostgreSQL has row locks and needs none of this.

type writeLockKey struct{}

// lockWrites takes the SQLite write lock unless ctx already holds it, and
// returns the context to use and the unlock function.
func (db *DB) lockWrites(ctx context.Context) (context.Context, func()) {
	if db.Dialect != dbutil.SQLite || ctx.Value(writeLockKey{}) != nil {
		return ctx, func() {}
	}
	db.writeMu.Lock()
	return context.WithValue(ctx, writeLockKey{}, true), db.writeMu.Unlock
}

// DoTxn runs fn in a transaction (see dbutil), queued behind this process's
// other SQLite writers.
func (db *DB) DoTxn(ctx context.Context, opts *dbutil.TxnOptions, fn func(ctx context.Context) error) error {
	ctx, unlock := db.lockWrites(ctx)
	defer unlock()
	return db.Database.DoTxn(ctx, opts, fn)
}

// Exec runs a statement; outside a transaction it queues like DoTxn, as
// every Exec here writes.
func (db *DB) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx, unlock := db.lockWrites(ctx)
	defer unlock()
	return db.Database.Exec(ctx, query, args...)
}
