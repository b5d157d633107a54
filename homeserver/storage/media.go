package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// Media is one mxc:// URI's metadata (the content is a file named by
// ContentHash in package media's store).
type Media struct {
	Origin      string // the server name in the URI
	MediaID     string
	ContentHash string // lowercase hex SHA-256
	ContentType string
	UploadName  string // "" when the upload named no file
	Size        int64
	UserID      id.UserID // the uploader; "" for remote media
	CreatedTS   int64
}

// ErrMediaExists is returned by InsertMedia when the URI is taken.
var ErrMediaExists = errors.New("media ID already exists")

// InsertMedia records an upload whose content is already stored.
func (db *DB) InsertMedia(ctx context.Context, m *Media) error {
	if m.CreatedTS == 0 {
		m.CreatedTS = nowMS()
	}
	res, err := db.Exec(ctx, `
		INSERT INTO media (origin, media_id, content_hash, content_type, upload_name, size, user_id, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (origin, media_id) DO NOTHING`,
		m.Origin, m.MediaID, m.ContentHash, m.ContentType, nullString(m.UploadName), m.Size, nullString(string(m.UserID)), m.CreatedTS)
	if err != nil {
		return fmt.Errorf("insert media: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrMediaExists
	}
	return nil
}

// GetMedia returns the metadata of mxc://origin/mediaID, or ErrNotFound.
func (db *DB) GetMedia(ctx context.Context, origin, mediaID string) (*Media, error) {
	var m Media
	var name, userID sql.NullString
	err := db.QueryRow(ctx, `
		SELECT origin, media_id, content_hash, content_type, upload_name, size, user_id, created_ts
		FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID).
		Scan(&m.Origin, &m.MediaID, &m.ContentHash, &m.ContentType, &name, &m.Size, &userID, &m.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get media: %w", err)
	}
	m.UploadName, m.UserID = name.String, id.UserID(userID.String)
	return &m, nil
}

// ErrQuotaExceeded is returned when an upload would take its uploader past
// media.user_quota.
var ErrQuotaExceeded = errors.New("media quota exceeded")

// addUsage counts size bytes against userID's uploads, failing with
// ErrQuotaExceeded when that would pass quota (0: none). In a transaction
// with the media insert, so the count never drifts from the rows; the
// conditional upsert makes concurrent uploads (in any process) see each
// other.
func (db *DB) addUsage(ctx context.Context, userID id.UserID, size, quota int64) error {
	if userID == "" {
		return nil
	}
	if quota > 0 && size > quota {
		return ErrQuotaExceeded
	}
	res, err := db.Exec(ctx, `
		INSERT INTO media_usage (user_id, bytes) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET bytes = media_usage.bytes + excluded.bytes
		WHERE CAST($3 AS BIGINT) = 0 OR media_usage.bytes + excluded.bytes <= CAST($3 AS BIGINT)`, userID, size, quota)
	if err != nil {
		return fmt.Errorf("count media usage: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrQuotaExceeded
	}
	return nil
}

// InsertMediaWithQuota is InsertMedia for an upload by m.UserID, counted
// against quota bytes (0: no limit): ErrQuotaExceeded, and nothing
// written, when it does not fit.
func (db *DB) InsertMediaWithQuota(ctx context.Context, m *Media, quota int64) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := db.addUsage(ctx, m.UserID, m.Size, quota); err != nil {
			return err
		}
		return db.InsertMedia(ctx, m)
	})
}

// MediaUsage returns the bytes userID has uploaded.
func (db *DB) MediaUsage(ctx context.Context, userID id.UserID) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, `SELECT bytes FROM media_usage WHERE user_id = $1`, userID).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("get media usage: %w", err)
	}
	return n, nil
}

// PendingMedia is a media ID reserved by POST /_matrix/media/v1/create
// whose content has not been uploaded yet.
type PendingMedia struct {
	Origin    string
	MediaID   string
	UserID    id.UserID
	CreatedTS int64
	ExpiresTS int64
}

// ErrTooManyPending is returned by CreatePendingMedia when the user holds
// the maximum of unexpired reservations.
type ErrTooManyPending struct {
	// NextExpiry is when the user's oldest reservation expires (ms).
	NextExpiry int64
}

func (e *ErrTooManyPending) Error() string { return "too many pending media uploads" }

// CreatePendingMedia reserves p's media ID unless p.UserID already holds
// maxPending unexpired reservations (*ErrTooManyPending). It also drops
// reservations that expired more than grace ms ago (the grace lets an
// upload that started in time finish).
func (db *DB) CreatePendingMedia(ctx context.Context, p *PendingMedia, maxPending int, grace int64) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := db.Exec(ctx, `DELETE FROM media_pending WHERE expires_ts < $1`, p.CreatedTS-grace); err != nil {
			return fmt.Errorf("prune pending media: %w", err)
		}
		var count int
		var oldest sql.NullInt64
		err := db.QueryRow(ctx, `SELECT COUNT(*), MIN(expires_ts) FROM media_pending WHERE user_id = $1 AND expires_ts > $2`,
			p.UserID, p.CreatedTS).Scan(&count, &oldest)
		if err != nil {
			return fmt.Errorf("count pending media: %w", err)
		}
		if count >= maxPending {
			return &ErrTooManyPending{NextExpiry: oldest.Int64}
		}
		res, err := db.Exec(ctx, `
			INSERT INTO media_pending (origin, media_id, user_id, created_ts, expires_ts)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (origin, media_id) DO NOTHING`,
			p.Origin, p.MediaID, p.UserID, p.CreatedTS, p.ExpiresTS)
		if err != nil {
			return fmt.Errorf("insert pending media: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrMediaExists
		}
		return nil
	})
}

// GetPendingMedia returns the reservation of mxc://origin/mediaID, or
// ErrNotFound.
func (db *DB) GetPendingMedia(ctx context.Context, origin, mediaID string) (*PendingMedia, error) {
	var p PendingMedia
	err := db.QueryRow(ctx, `
		SELECT origin, media_id, user_id, created_ts, expires_ts FROM media_pending
		WHERE origin = $1 AND media_id = $2`, origin, mediaID).
		Scan(&p.Origin, &p.MediaID, &p.UserID, &p.CreatedTS, &p.ExpiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get pending media: %w", err)
	}
	return &p, nil
}

// CompletePendingMedia turns m.UserID's reservation of m's URI into the
// media row m, counted against quota: ErrNotFound when the reservation is
// gone (another upload completed it, or it was pruned), ErrQuotaExceeded.
func (db *DB) CompletePendingMedia(ctx context.Context, m *Media, quota int64) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		res, err := db.Exec(ctx, `DELETE FROM media_pending WHERE origin = $1 AND media_id = $2 AND user_id = $3`,
			m.Origin, m.MediaID, m.UserID)
		if err != nil {
			return fmt.Errorf("complete pending media: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if err := db.addUsage(ctx, m.UserID, m.Size, quota); err != nil {
			return err
		}
		return db.InsertMedia(ctx, m)
	})
}

// DeleteExpiredPendingMedia drops reservations that expired before ts (ms).
func (db *DB) DeleteExpiredPendingMedia(ctx context.Context, ts int64) error {
	if _, err := db.Exec(ctx, `DELETE FROM media_pending WHERE expires_ts < $1`, ts); err != nil {
		return fmt.Errorf("prune pending media: %w", err)
	}
	return nil
}

// Thumbnail is a generated thumbnail of the content with SHA-256
// SourceHash at one configured size and method.
type Thumbnail struct {
	SourceHash  string
	Width       int
	Height      int
	Method      string
	ContentHash string
	ContentType string
	Size        int64
	CreatedTS   int64
}

// GetThumbnail returns the thumbnail of sourceHash at the given size, or
// ErrNotFound.
func (db *DB) GetThumbnail(ctx context.Context, sourceHash string, width, height int, method string) (*Thumbnail, error) {
	t := Thumbnail{SourceHash: sourceHash, Width: width, Height: height, Method: method}
	err := db.QueryRow(ctx, `
		SELECT content_hash, content_type, size, created_ts FROM media_thumbnails
		WHERE source_hash = $1 AND width = $2 AND height = $3 AND method = $4`, sourceHash, width, height, method).
		Scan(&t.ContentHash, &t.ContentType, &t.Size, &t.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get thumbnail: %w", err)
	}
	return &t, nil
}

// PutThumbnail records a thumbnail whose file is in the store, replacing
// the row of the same source and size (whose file went missing, or which
// another process generated meanwhile: the same bytes).
func (db *DB) PutThumbnail(ctx context.Context, t *Thumbnail) error {
	if t.CreatedTS == 0 {
		t.CreatedTS = nowMS()
	}
	_, err := db.Exec(ctx, `
		INSERT INTO media_thumbnails (source_hash, width, height, method, content_hash, content_type, size, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (source_hash, width, height, method) DO UPDATE SET content_hash = excluded.content_hash,
			content_type = excluded.content_type, size = excluded.size, created_ts = excluded.created_ts`,
		t.SourceHash, t.Width, t.Height, t.Method, t.ContentHash, t.ContentType, t.Size, t.CreatedTS)
	if err != nil {
		return fmt.Errorf("insert thumbnail: %w", err)
	}
	return nil
}

// GetURLPreview returns the cached preview JSON of url if it has not
// expired at now (ms), or ErrNotFound.
func (db *DB) GetURLPreview(ctx context.Context, url string, now int64) ([]byte, error) {
	var response string
	err := db.QueryRow(ctx, `SELECT response FROM media_url_previews WHERE url = $1 AND expires_ts > $2`, url, now).Scan(&response)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get url preview: %w", err)
	}
	return []byte(response), nil
}

// PutURLPreview caches url's preview until expiresTS, replacing an older
// one, and prunes expired entries.
func (db *DB) PutURLPreview(ctx context.Context, url string, response []byte, fetchedTS, expiresTS int64) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := db.Exec(ctx, `DELETE FROM media_url_previews WHERE expires_ts <= $1`, fetchedTS); err != nil {
			return fmt.Errorf("prune url previews: %w", err)
		}
		_, err := db.Exec(ctx, `
			INSERT INTO media_url_previews (url, response, fetched_ts, expires_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (url) DO UPDATE SET response = excluded.response, fetched_ts = excluded.fetched_ts, expires_ts = excluded.expires_ts`,
			url, string(response), fetchedTS, expiresTS)
		if err != nil {
			return fmt.Errorf("cache url preview: %w", err)
		}
		return nil
	})
}
