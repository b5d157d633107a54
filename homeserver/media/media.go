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
//
// Besides uploads and downloads the package owns asynchronous uploads
// (async.go: media IDs created before their content), thumbnails
// (thumbnail.go, image.go) and URL previews (preview.go, fetched through
// the SSRF guard in ssrf.go).
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
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
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
	// ErrQuotaExceeded is an upload beyond its uploader's media.user_quota.
	ErrQuotaExceeded = errors.New("media quota exceeded")
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
	quota      int64

	// Asynchronous uploads (async.go).
	maxPending   int
	unusedExpiry time.Duration
	uploadedMu   sync.Mutex
	uploaded     map[string]*uploadWaiters

	// Thumbnails (thumbnail.go).
	thumbnailSizes []config.ThumbnailSize
	maxPixels      int64
	thumbFlight    flight[thumbnailKey, *storage.Thumbnail]
	// decodeSlots bounds the images decoded at once, and so the memory
	// thumbnailing takes (up to ~4 bytes × max_thumbnail_pixels each).
	decodeSlots chan struct{}
	generated   atomic.Int64

	// URL previews (preview.go); nil when media.url_preview is off.
	preview *previewer
}

// New opens the media store at cfg.Media.StorePath (creating it) and
// removes temporary files that crashed uploads left behind, and expired
// reservations of asynchronous uploads.
func New(db *storage.DB, cfg *config.Config) (*Repo, error) {
	r := &Repo{
		db:             db,
		dir:            cfg.ResolvePath(cfg.Media.StorePath),
		serverName:     cfg.ServerName,
		maxUpload:      cfg.Media.MaxUploadSize,
		quota:          cfg.Media.UserQuota,
		maxPending:     cfg.Media.MaxPendingUploads,
		unusedExpiry:   cfg.Media.UnusedExpiry.D(),
		uploaded:       make(map[string]*uploadWaiters),
		thumbnailSizes: cfg.Media.ThumbnailSizes,
		maxPixels:      cfg.Media.MaxThumbnailPixels,
		decodeSlots:    make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	if cfg.Media.URLPreview.Enabled {
		p, err := newPreviewer(r, cfg.Media.URLPreview)
		if err != nil {
			return nil, fmt.Errorf("media.url_preview: %w", err)
		}
		r.preview = p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.PruneExpired(ctx); err != nil {
		return nil, fmt.Errorf("media: %w", err)
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
	rc, err := r.receiveUpload(ctx, body, u)
	if err != nil {
		return id.ContentURI{}, err
	}
	defer rc.discard()
	if err := rc.commit(); err != nil {
		return id.ContentURI{}, err
	}
	m := r.mediaRow(rc, u)
	// A collision of 143 random bits will not happen; if the database says
	// it did, something else is wrong, and a second try tells which.
	for range 3 {
		m.MediaID = random.String(mediaIDLength)
		if err = r.db.InsertMediaWithQuota(ctx, m, r.quota); !errors.Is(err, storage.ErrMediaExists) {
			break
		}
	}
	if errors.Is(err, storage.ErrQuotaExceeded) {
		// A concurrent upload took the room receiveUpload saw. The file
		// stays: another row may already share it.
		return id.ContentURI{}, ErrQuotaExceeded
	} else if err != nil {
		return id.ContentURI{}, err
	}
	return id.ContentURI{Homeserver: r.serverName, FileID: m.MediaID}, nil
}

// receiveUpload checks an upload's metadata and quota and receives its
// body into a temporary file.
func (r *Repo) receiveUpload(ctx context.Context, body io.Reader, u Upload) (*received, error) {
	if len(u.FileName) > MaxFileNameLength {
		return nil, ErrBadFileName
	}
	if u.DeclaredSize > r.maxUpload {
		return nil, ErrTooLarge
	}
	// Refuse before reading when the announced size cannot fit, and again
	// once the real size is known (the insert settles races).
	if err := r.checkQuota(ctx, u.UserID, max(u.DeclaredSize, 0)); err != nil {
		return nil, err
	}
	rc, err := r.receive(body, r.maxUpload)
	if err != nil {
		return nil, err
	}
	if err := r.checkQuota(ctx, u.UserID, rc.size); err != nil {
		rc.discard()
		return nil, err
	}
	return rc, nil
}

func (r *Repo) mediaRow(rc *received, u Upload) *storage.Media {
	return &storage.Media{
		Origin:      r.serverName,
		ContentHash: rc.hash,
		ContentType: NormalizeContentType(u.ContentType),
		UploadName:  u.FileName,
		Size:        rc.size,
		UserID:      u.UserID,
	}
}

// checkQuota fails with ErrQuotaExceeded when size more bytes would take
// userID past media.user_quota.
func (r *Repo) checkQuota(ctx context.Context, userID id.UserID, size int64) error {
	if r.quota <= 0 || userID == "" {
		return nil
	}
	if size > r.quota {
		return ErrQuotaExceeded
	}
	used, err := r.db.MediaUsage(ctx, userID)
	if err != nil {
		return err
	}
	if used+size > r.quota {
		return ErrQuotaExceeded
	}
	return nil
}

// received is content written to a temporary file and hashed, not yet in
// the store.
type received struct {
	repo *Repo
	tmp  string // "" once committed or discarded
	hash string
	size int64
}

// receive writes body into a temporary file (at most limit bytes, else
// ErrTooLarge) and returns it hashed.
func (r *Repo) receive(body io.Reader, limit int64) (*received, error) {
	tmp, err := os.CreateTemp(r.tmpDir(), "upload-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	src := &trackedReader{r: io.LimitReader(body, limit+1)}
	size, err := io.Copy(tmp, io.TeeReader(src, h))
	if src.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBodyRead, src.err)
	} else if err != nil {
		return nil, fmt.Errorf("write temporary file: %w", err)
	}
	if size > limit {
		return nil, ErrTooLarge
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("sync temporary file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("close temporary file: %w", err)
	}
	ok = true
	return &received{repo: r, tmp: tmp.Name(), hash: hexSum(h), size: size}, nil
}

// commit moves the content into the store under its hash.
func (rc *received) commit() error {
	final := rc.repo.path(rc.hash)
	if _, err := os.Stat(final); err == nil {
		// Stored before: the new row shares the file (discard removes
		// the copy).
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return fmt.Errorf("create media directory: %w", err)
	}
	// Atomic: a concurrent upload of the same bytes renames an identical
	// file onto the same name, and a reader sees one or the other, whole.
	if err := os.Rename(rc.tmp, final); err != nil {
		return fmt.Errorf("move upload into the store: %w", err)
	}
	rc.tmp = ""
	return nil
}

// discard removes the temporary file if it is still there.
func (rc *received) discard() {
	if rc.tmp != "" {
		os.Remove(rc.tmp)
		rc.tmp = ""
	}
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
// servers is ErrNotFound until federation can fetch it; media created but
// not uploaded yet is ErrNotYetUploaded (OpenWait waits for it).
func (r *Repo) Open(ctx context.Context, serverName, mediaID string) (*Content, error) {
	return r.OpenWait(ctx, serverName, mediaID, 0)
}

// openNow opens stored media without looking for a pending upload.
func (r *Repo) openNow(ctx context.Context, serverName, mediaID string) (*Content, error) {
	if serverName != r.serverName || !ValidMediaID(mediaID) {
		return nil, ErrNotFound
	}
	m, err := r.db.GetMedia(ctx, serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, err
	}
	f, err := r.openFile(m.ContentHash)
	if err != nil {
		return nil, fmt.Errorf("%w: mxc://%s/%s", err, serverName, mediaID)
	}
	return &Content{Media: m, File: f}, nil
}

// openFile opens the stored file with the given SHA-256.
func (r *Repo) openFile(contentHash string) (*os.File, error) {
	f, err := os.Open(r.path(contentHash))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (sha256 %s)", ErrContentMissing, contentHash)
	} else if err != nil {
		return nil, fmt.Errorf("open media: %w", err)
	}
	return f, nil
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
