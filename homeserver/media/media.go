// Package media owns the homeserver's content repository: media IDs, the
// content-addressed file store (media.store_path) and the metadata rows
// that map mxc:// URIs onto it, and the rules for serving content safely
// (serve.go). Authentication and the spec's error JSON are clientapi's.
//
// A file is named by the SHA-256 of its content, so the same bytes uploaded
// twice are stored once under two media IDs. An upload is written to a
// temporary file while it is hashed and size-checked, renamed into place,
// and only then recorded in the database: a row never points at a partial
// file. (A crash between rename and insert leaves an unreferenced file, not
// a broken URI; the media_content_hash_idx index lets a later sweep find it.)
package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"mime"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Errors the client API maps onto spec error codes.
var (
	ErrNotFound = errors.New("media not found")
	ErrTooLarge = errors.New("media larger than the upload limit")
	// ErrBodyRead wraps a failure to read the client's upload (it went
	// away, or sent a truncated body): the client's fault, not ours.
	ErrBodyRead = errors.New("read upload")
	// ErrBadFileName is an upload filename beyond MaxFileNameLength.
	ErrBadFileName = errors.New("upload filename too long")
	// ErrContentMissing is a row whose file is not in the store: a
	// misconfiguration (processes not sharing media.store_path) or a file
	// removed by hand.
	ErrContentMissing = errors.New("media file missing from the store")
)

// MaxFileNameLength bounds the filename an upload may carry (bytes).
const MaxFileNameLength = 1024

// mediaIDLength base62 characters are ~143 random bits.
const mediaIDLength = 24

// tmpMaxAge is how old a temporary file must be before New removes it:
// another process sharing the store may still be writing a younger one.
const tmpMaxAge = 24 * time.Hour

// Repo is the local content repository.
type Repo struct {
	db         *storage.DB
	dir        string
	serverName string
	maxUpload  int64
}

// New opens the media store at cfg.Media.StorePath (creating it) and
// removes temporary files that crashed uploads left behind.
func New(db *storage.DB, cfg *config.Config) (*Repo, error) {
	r := &Repo{
		db:         db,
		dir:        cfg.ResolvePath(cfg.Media.StorePath),
		serverName: cfg.ServerName,
		maxUpload:  cfg.Media.MaxUploadSize,
	}
	if err := os.MkdirAll(r.tmpDir(), 0o700); err != nil {
		return nil, fmt.Errorf("media.store_path: %w", err)
	}
	entries, err := os.ReadDir(r.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("media.store_path: %w", err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > tmpMaxAge {
			_ = os.Remove(filepath.Join(r.tmpDir(), e.Name()))
		}
	}
	return r, nil
}

// MaxUploadSize is the largest upload accepted, in bytes.
func (r *Repo) MaxUploadSize() int64 { return r.maxUpload }

func (r *Repo) tmpDir() string { return filepath.Join(r.dir, "tmp") }

// path is where content with the given SHA-256 (hex) is stored; two levels
// of fan-out keep directories small.
func (r *Repo) path(contentHash string) string {
	return filepath.Join(r.dir, contentHash[:2], contentHash[2:4], contentHash)
}

// Upload describes an upload besides its bytes.
type Upload struct {
	ContentType string // the request's Content-Type; "" means application/octet-stream
	FileName    string // the filename query parameter; "" for none
	UserID      id.UserID
	// DeclaredSize is the request's Content-Length (-1 if unknown), so an
	// upload announced as too large is refused before it is read.
	DeclaredSize int64
}

// Upload stores body as new content and returns its mxc:// URI.
func (r *Repo) Upload(ctx context.Context, body io.Reader, u Upload) (id.ContentURI, error) {
	if len(u.FileName) > MaxFileNameLength {
		return id.ContentURI{}, ErrBadFileName
	}
	if u.DeclaredSize > r.maxUpload {
		return id.ContentURI{}, ErrTooLarge
	}
	contentHash, size, err := r.store(body)
	if err != nil {
		return id.ContentURI{}, err
	}
	m := &storage.Media{
		Origin:      r.serverName,
		ContentHash: contentHash,
		ContentType: NormalizeContentType(u.ContentType),
		UploadName:  u.FileName,
		Size:        size,
		UserID:      u.UserID,
	}
	// A collision of 143 random bits will not happen; if the database says
	// it did, something else is wrong, and a second try tells which.
	for range 3 {
		m.MediaID = random.String(mediaIDLength)
		if err = r.db.InsertMedia(ctx, m); !errors.Is(err, storage.ErrMediaExists) {
			break
		}
	}
	if err != nil {
		return id.ContentURI{}, err
	}
	return id.ContentURI{Homeserver: r.serverName, FileID: m.MediaID}, nil
}

// store writes body into the store (at most maxUpload bytes) and returns
// its SHA-256 and size.
func (r *Repo) store(body io.Reader) (contentHash string, size int64, err error) {
	tmp, err := os.CreateTemp(r.tmpDir(), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	src := &trackedReader{r: io.LimitReader(body, r.maxUpload+1)}
	size, err = io.Copy(tmp, io.TeeReader(src, h))
	if src.err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrBodyRead, src.err)
	} else if err != nil {
		return "", 0, fmt.Errorf("write temporary file: %w", err)
	}
	if size > r.maxUpload {
		return "", 0, ErrTooLarge
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("sync temporary file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("close temporary file: %w", err)
	}
	contentHash = hexSum(h)
	final := r.path(contentHash)
	if _, err := os.Stat(final); err == nil {
		// Stored before: the new row shares the file (the deferred
		// cleanup removes the copy).
		return contentHash, size, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return "", 0, fmt.Errorf("create media directory: %w", err)
	}
	// Atomic: a concurrent upload of the same bytes renames an identical
	// file onto the same name, and a reader sees one or the other, whole.
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", 0, fmt.Errorf("move upload into the store: %w", err)
	}
	tmp = nil
	return contentHash, size, nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// trackedReader remembers the reader's first failure, so that a client's
// broken upload is told apart from a failing disk.
type trackedReader struct {
	r   io.Reader
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

// Content is stored media opened for reading; Close it.
type Content struct {
	*storage.Media
	File *os.File
}

// Close closes the file.
func (c *Content) Close() error { return c.File.Close() }

// mediaIDPattern is the spec's media ID alphabet; refusing anything else
// rules out path traversal whatever the store does with the ID.
var mediaIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// ValidMediaID reports whether s is a well-formed media ID.
func ValidMediaID(s string) bool { return mediaIDPattern.MatchString(s) }

// Open returns the content of mxc://serverName/mediaID. Media of other
// servers is ErrNotFound until federation can fetch it.
func (r *Repo) Open(ctx context.Context, serverName, mediaID string) (*Content, error) {
	if serverName != r.serverName || !ValidMediaID(mediaID) {
		return nil, ErrNotFound
	}
	m, err := r.db.GetMedia(ctx, serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, err
	}
	f, err := os.Open(r.path(m.ContentHash))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: mxc://%s/%s (sha256 %s)", ErrContentMissing, serverName, mediaID, m.ContentHash)
	} else if err != nil {
		return nil, fmt.Errorf("open media: %w", err)
	}
	return &Content{Media: m, File: f}, nil
}

// maxContentTypeLength bounds what is stored and echoed back.
const maxContentTypeLength = 255

// NormalizeContentType turns an upload's Content-Type into what is stored
// and served: the same type, lowercased and re-serialised, or
// application/octet-stream when it is missing or unparseable (the spec's
// default, and one of the "reasonably close" answers it allows).
func NormalizeContentType(ct string) string {
	const fallback = "application/octet-stream"
	mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(ct))
	if err != nil || !strings.Contains(mediaType, "/") {
		return fallback
	}
	if out := mime.FormatMediaType(mediaType, params); out != "" && len(out) <= maxContentTypeLength {
		return out
	}
	if len(mediaType) <= maxContentTypeLength {
		return mediaType
	}
	return fallback
}
