package media

import (
	"context"
	"errors"
	"io"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Asynchronous uploads (spec: POST /_matrix/media/v1/create, then PUT
// /_matrix/media/v3/upload/{serverName}/{mediaId}): a client reserves an
// mxc:// URI, sends it in a message, and uploads the content afterwards;
// downloads wait for it (timeout_ms) in the meantime.

// Errors of asynchronous uploads.
var (
	// ErrNotYetUploaded is media created but not uploaded within the
	// download's wait.
	ErrNotYetUploaded = errors.New("media not yet uploaded")
	// ErrCannotOverwrite is an upload to a media ID that has content.
	ErrCannotOverwrite = errors.New("media already uploaded")
	// ErrNotCreator is an upload to a media ID another user created.
	ErrNotCreator = errors.New("media ID created by another user")
)

// TooManyPendingError is a create beyond media.max_pending_uploads.
type TooManyPendingError struct {
	// RetryAfter is when the user's oldest reservation expires.
	RetryAfter time.Duration
}

func (e *TooManyPendingError) Error() string { return "too many pending media uploads" }

// pendingGrace is how long after its expiry a reservation is kept, so an
// upload that started in time may finish.
const pendingGrace = time.Hour

// pollInterval is how often a waiting download looks in the database for
// an upload that another homeserver process completed (this process's
// uploads wake waiters at once).
const pollInterval = 500 * time.Millisecond

// Create reserves a new mxc:// URI for userID and returns it with the time
// its upload must start by.
func (r *Repo) Create(ctx context.Context, userID id.UserID) (id.ContentURI, time.Time, error) {
	now := time.Now()
	p := &storage.PendingMedia{
		Origin:    r.serverName,
		UserID:    userID,
		CreatedTS: now.UnixMilli(),
		ExpiresTS: now.Add(r.unusedExpiry).UnixMilli(),
	}
	var err error
	for range 3 {
		p.MediaID = random.String(mediaIDLength)
		if _, err = r.db.GetMedia(ctx, p.Origin, p.MediaID); err == nil {
			err = storage.ErrMediaExists
			continue
		} else if !errors.Is(err, storage.ErrNotFound) {
			return id.ContentURI{}, time.Time{}, err
		}
		if err = r.db.CreatePendingMedia(ctx, p, r.maxPending, pendingGrace.Milliseconds()); !errors.Is(err, storage.ErrMediaExists) {
			break
		}
	}
	var tooMany *storage.ErrTooManyPending
	if errors.As(err, &tooMany) {
		return id.ContentURI{}, time.Time{}, &TooManyPendingError{RetryAfter: time.Until(time.UnixMilli(tooMany.NextExpiry))}
	} else if err != nil {
		return id.ContentURI{}, time.Time{}, err
	}
	return id.ContentURI{Homeserver: r.serverName, FileID: p.MediaID}, time.UnixMilli(p.ExpiresTS), nil
}

// UploadTo stores body as the content of mxc://serverName/mediaID, which
// u.UserID created with Create. ErrNotFound: no such reservation (or it
// expired); ErrNotCreator; ErrCannotOverwrite: content was uploaded
// already; and the errors of Upload.
func (r *Repo) UploadTo(ctx context.Context, serverName, mediaID string, body io.Reader, u Upload) error {
	if serverName != r.serverName || !ValidMediaID(mediaID) {
		return ErrNotFound
	}
	if err := r.checkUploadable(ctx, mediaID, u.UserID); err != nil {
		return err
	}
	rc, err := r.receiveUpload(ctx, body, u)
	if err != nil {
		return err
	}
	defer rc.discard()
	if err := rc.commit(); err != nil {
		return err
	}
	m := r.mediaRow(rc, u)
	m.MediaID = mediaID
	err = r.db.CompletePendingMedia(ctx, m, r.quota)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		// A concurrent upload to the same ID finished first, or the
		// reservation was pruned while this one was being received.
		if _, err := r.db.GetMedia(ctx, serverName, mediaID); err == nil {
			return ErrCannotOverwrite
		}
		return ErrNotFound
	case errors.Is(err, storage.ErrQuotaExceeded):
		return ErrQuotaExceeded
	case err != nil:
		return err
	}
	r.wake(mediaID)
	return nil
}

// checkUploadable tells whether userID may upload to mediaID now, before
// the body is read (CompletePendingMedia settles races).
func (r *Repo) checkUploadable(ctx context.Context, mediaID string, userID id.UserID) error {
	uploaded := func() error {
		if m, err := r.db.GetMedia(ctx, r.serverName, mediaID); err == nil {
			if m.UserID != userID {
				return ErrNotCreator
			}
			return ErrCannotOverwrite
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		return nil
	}
	if err := uploaded(); err != nil {
		return err
	}
	p, err := r.db.GetPendingMedia(ctx, r.serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		// A concurrent upload may have completed between the two reads
		// (it replaces the reservation with the media row at once).
		if err := uploaded(); err != nil {
			return err
		}
		return ErrNotFound
	} else if err != nil {
		return err
	}
	if p.UserID != userID {
		return ErrNotCreator
	}
	if p.ExpiresTS <= time.Now().UnixMilli() {
		return ErrNotFound
	}
	return nil
}

// PruneExpired drops reservations whose upload never came (past the grace
// an upload in progress gets); Create also does it as it goes.
func (r *Repo) PruneExpired(ctx context.Context) error {
	return r.db.DeleteExpiredPendingMedia(ctx, time.Now().Add(-pendingGrace).UnixMilli())
}

// OpenWait is Open that waits up to timeout for media that was created but
// not uploaded yet: ErrNotYetUploaded if it is still not there.
func (r *Repo) OpenWait(ctx context.Context, serverName, mediaID string, timeout time.Duration) (*Content, error) {
	c, err := r.openNow(ctx, serverName, mediaID)
	if !errors.Is(err, ErrNotFound) || serverName != r.serverName || !ValidMediaID(mediaID) {
		return c, err
	}
	p, err := r.db.GetPendingMedia(ctx, serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		// Uploaded between the two lookups?
		return r.openNow(ctx, serverName, mediaID)
	} else if err != nil {
		return nil, err
	}
	if p.ExpiresTS <= time.Now().UnixMilli() {
		return nil, ErrNotFound
	}
	if timeout <= 0 {
		return nil, ErrNotYetUploaded
	}
	wake, done := r.waitFor(mediaID)
	defer done()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, ErrNotYetUploaded
		case <-wake:
		case <-poll.C:
		}
		c, err := r.openNow(ctx, serverName, mediaID)
		if !errors.Is(err, ErrNotFound) {
			return c, err
		}
		if _, err := r.db.GetPendingMedia(ctx, serverName, mediaID); errors.Is(err, storage.ErrNotFound) {
			// Neither uploaded nor pending: pruned, or the upload's
			// commit is not visible yet (look once more next tick).
			if c, err := r.openNow(ctx, serverName, mediaID); !errors.Is(err, ErrNotFound) {
				return c, err
			}
			return nil, ErrNotFound
		} else if err != nil {
			return nil, err
		}
	}
}

// uploadWaiters are the downloads waiting for one media ID in this process.
type uploadWaiters struct {
	ch chan struct{} // closed when the upload completes
	n  int
}

// waitFor returns a channel closed when mediaID's upload completes in this
// process, and the function to call when done waiting.
func (r *Repo) waitFor(mediaID string) (<-chan struct{}, func()) {
	r.uploadedMu.Lock()
	defer r.uploadedMu.Unlock()
	w := r.uploaded[mediaID]
	if w == nil {
		w = &uploadWaiters{ch: make(chan struct{})}
		r.uploaded[mediaID] = w
	}
	w.n++
	return w.ch, func() {
		r.uploadedMu.Lock()
		defer r.uploadedMu.Unlock()
		if w.n--; w.n == 0 && r.uploaded[mediaID] == w {
			delete(r.uploaded, mediaID)
		}
	}
}

// wake releases the downloads waiting for mediaID.
func (r *Repo) wake(mediaID string) {
	r.uploadedMu.Lock()
	defer r.uploadedMu.Unlock()
	if w := r.uploaded[mediaID]; w != nil {
		close(w.ch)
		delete(r.uploaded, mediaID)
	}
}
