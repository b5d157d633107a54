package storage

import (
	"context"
	"errors"
	"fmt"
)

// AllocStreamPos reserves n consecutive stream positions and returns the
// last one (the block is last-n+1 … last). It must run inside the
// transaction that writes the rows using them: the counter row stays locked
// until that transaction ends, so positions become visible in order and a
// sync that has seen position p can never later find a row below p.
func (db *DB) AllocStreamPos(ctx context.Context, n int64) (int64, error) {
	var last int64
	err := db.QueryRow(ctx, `UPDATE stream_counter SET pos = pos + $1 WHERE id = 1 RETURNING pos`, n).Scan(&last)
	if err != nil {
		return 0, fmt.Errorf("allocate stream position: %w", err)
	}
	return last, nil
}

// CurrentStreamPos returns the highest committed stream position.
func (db *DB) CurrentStreamPos(ctx context.Context) (int64, error) {
	var pos int64
	if err := db.QueryRow(ctx, `SELECT pos FROM stream_counter WHERE id = 1`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("read stream position: %w", err)
	}
	return pos, nil
}

// writeAtNewPos runs write in a transaction at a new stream position. The
// position is taken first: that locks the counter row, which orders the
// transaction's reads after every earlier writer's commit. It returns the
// position, or 0 when write returned errUnchanged (nothing is written then).
func (db *DB) writeAtNewPos(ctx context.Context, write func(ctx context.Context, pos int64) error) (int64, error) {
	var pos int64
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		var err error
		if pos, err = db.AllocStreamPos(ctx, 1); err != nil {
			return err
		}
		return write(ctx, pos)
	})
	if errors.Is(err, errUnchanged) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return pos, nil
}
