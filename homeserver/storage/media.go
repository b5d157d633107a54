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
