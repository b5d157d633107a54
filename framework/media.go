package framework

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
)

// Media: moving files between the remote network and the homeserver's
// content repository. Everything goes through the spec's media API
// (upload, authenticated download), so it works on any homeserver.

// DefaultMaxMediaSize is the size limit UploadFromURL and Download apply
// when given maxSize ≤ 0.
const DefaultMaxMediaSize = 50 << 20

// ErrMediaTooLarge is returned when media exceeds the caller's size limit;
// nothing beyond the limit is read.
var ErrMediaTooLarge = errors.New("media larger than the size limit")

const (
	// mediaFetchTimeout bounds a whole fetch in UploadFromURL: headers and
	// body. Bridges fetch in their message path, so a stuck server must
	// not hold a room's events for long.
	mediaFetchTimeout = 30 * time.Second
	// maxAvatarSize bounds avatars fetched by EnsureGhostAvatarURL.
	maxAvatarSize = 10 << 20
	// avatarRetryInterval is how long EnsureGhostAvatarURL leaves a source
	// URL that failed before fetching it again.
	avatarRetryInterval = 15 * time.Minute
)

// UploadBytes uploads data to the homeserver as intent's user (nil: the
// bot) and returns its mxc:// URI. contentType "" lets the homeserver use
// application/octet-stream; fileName "" uploads without a name.
func (a *Appservice) UploadBytes(ctx context.Context, intent *appservice.IntentAPI, data []byte, contentType, fileName string) (id.ContentURI, error) {
	if intent == nil {
		intent = a.Bot()
	}
	resp, err := intent.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: data, ContentType: contentType, FileName: fileName})
	if err != nil {
		return id.ContentURI{}, fmt.Errorf("upload media as %s: %w", intent.UserID, err)
	}
	return resp.ContentURI, nil
}

// UploadFromURL fetches an http(s) URL (within 30 seconds, refusing more
// than maxSize bytes, ≤ 0: DefaultMaxMediaSize) and uploads it as intent's
// user (nil: the bot). The content type is the server's, or sniffed from
// the bytes when the server sends none or a generic one; the file name
// comes from Content-Disposition or the URL's path.
//
// The URL is fetched from wherever this process runs, private networks
// included: pass URLs the remote network's API handed out (avatars, file
// links), not arbitrary text users typed. Errors name the URL's host only,
// as paths and queries of file links often carry credentials.
func (a *Appservice) UploadFromURL(ctx context.Context, intent *appservice.IntentAPI, rawURL string, maxSize int64) (id.ContentURI, error) {
	data, contentType, fileName, err := fetchMedia(ctx, rawURL, maxSize)
	if err != nil {
		return id.ContentURI{}, err
	}
	return a.UploadBytes(ctx, intent, data, contentType, fileName)
}

// Download fetches mxc:// content through the bot's client (authenticated
// media), refusing more than maxSize bytes (≤ 0: DefaultMaxMediaSize). It
// returns the bytes and their Content-Type.
func (a *Appservice) Download(ctx context.Context, uri id.ContentURI, maxSize int64) (data []byte, contentType string, err error) {
	if !uri.IsValid() {
		return nil, "", fmt.Errorf("download media: invalid content URI %q", uri.String())
	}
	resp, err := a.Bot().Download(ctx, uri)
	if err != nil {
		return nil, "", fmt.Errorf("download %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if data, err = readLimited(resp.Body, resp.ContentLength, maxSize); err != nil {
		return nil, "", fmt.Errorf("download %s: %w", uri, err)
	}
	return data, resp.Header.Get("Content-Type"), nil
}

// EnsureGhostAvatarURL gives a ghost the image at sourceURL (a remote
// network's avatar URL) as its avatar. The image is fetched and uploaded
// only when sourceURL differs from the one last used for this ghost
// (framework_ghosts.avatar_source), so calling it for every remote message
// costs one indexed read. An empty sourceURL leaves the avatar as it is.
//
// A source that fails to fetch or upload returns the error once and is
// tried again only after avatarRetryInterval; calls in between return nil
// without fetching, so a broken avatar URL does not slow every message.
//
// For a given ghost use either this or EnsureGhost's avatar argument: an
// avatar set through EnsureGhost is not known here as replacing the
// source's.
func (a *Appservice) EnsureGhostAvatarURL(ctx context.Context, userID id.UserID, sourceURL string) error {
	if sourceURL == "" {
		return nil
	}
	if !a.Config.IsGhost(userID) {
		return fmt.Errorf("%s is not in this appservice's ghost namespace", userID)
	}
	var source string
	err := a.DB.QueryRow(ctx, `SELECT avatar_source FROM framework_ghosts WHERE user_id = $1`, userID).Scan(&source)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read avatar source of %s: %w", userID, err)
	}
	if source == sourceURL {
		return nil // the usual case
	}
	failures := NewKV(a.DB, "ghost:"+string(userID))
	var failed avatarFailure
	if found, err := failures.Get(ctx, avatarFailureKey, &failed); err != nil {
		return err
	} else if found && failed.Source == sourceURL && time.Now().UnixMilli() < failed.RetryAfter {
		return nil
	}
	if err := a.setAvatarFromURL(ctx, userID, sourceURL); err != nil {
		failed = avatarFailure{Source: sourceURL, RetryAfter: time.Now().Add(avatarRetryInterval).UnixMilli()}
		if kvErr := failures.Set(ctx, avatarFailureKey, failed); kvErr != nil {
			err = errors.Join(err, kvErr)
		}
		return err
	}
	if failed.Source != "" {
		return failures.Delete(ctx, avatarFailureKey)
	}
	return nil
}

// avatarFailureKey (in the ghost's KV scope) remembers the source URL
// that last failed, so that it is not fetched again too soon.
const avatarFailureKey = "avatar_failure"

type avatarFailure struct {
	Source     string `json:"source"`
	RetryAfter int64  `json:"retry_after"` // Unix ms
}

// setAvatarFromURL uploads the image at sourceURL as the ghost, sets it as
// its avatar and records the source.
func (a *Appservice) setAvatarFromURL(ctx context.Context, userID id.UserID, sourceURL string) error {
	intent := a.Intent(userID)
	if err := intent.EnsureRegistered(ctx); err != nil {
		return fmt.Errorf("register ghost %s: %w", userID, err)
	}
	avatar, err := a.UploadFromURL(ctx, intent, sourceURL, maxAvatarSize)
	if err != nil {
		return fmt.Errorf("avatar of %s: %w", userID, err)
	}
	if err := a.setProfile(ctx, intent, "", avatar); err != nil {
		return err
	}
	_, err = a.DB.Exec(ctx, `INSERT INTO framework_ghosts (user_id, avatar_url, avatar_source) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET avatar_source = excluded.avatar_source`,
		userID, avatar.String(), sourceURL)
	if err != nil {
		return fmt.Errorf("record avatar source of %s: %w", userID, err)
	}
	return nil
}

// fetchMedia GETs rawURL for UploadFromURL.
func fetchMedia(ctx context.Context, rawURL string, maxSize int64) (data []byte, contentType, fileName string, err error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, "", "", errors.New("fetch media: not an http(s) URL")
	}
	ctx, cancel := context.WithTimeout(ctx, mediaFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", "", fmt.Errorf("fetch media from %s: %w", u.Host, err)
	}
	req.Header.Set("User-Agent", mautrix.DefaultUserAgent)
	resp, err := (&http.Client{}).Do(req) // the default transport, for its connection pool
	if err != nil {
		return nil, "", "", fmt.Errorf("fetch media from %s: %w", u.Host, redactURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", "", fmt.Errorf("fetch media from %s: HTTP %d", u.Host, resp.StatusCode)
	}
	if data, err = readLimited(resp.Body, resp.ContentLength, maxSize); err != nil {
		return nil, "", "", fmt.Errorf("fetch media from %s: %w", u.Host, redactURLError(err))
	}
	return data, sniffContentType(resp.Header.Get("Content-Type"), data), remoteFileName(resp.Header.Get("Content-Disposition"), u), nil
}

// redactURLError drops the URL (path and query may hold credentials) from
// the net/http client's errors, keeping what went wrong.
func redactURLError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err
	}
	return err
}

// readLimited reads at most maxSize bytes (≤ 0: DefaultMaxMediaSize),
// refusing at once a body whose declared length is larger.
func readLimited(r io.Reader, declared, maxSize int64) ([]byte, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxMediaSize
	}
	if declared > maxSize {
		return nil, fmt.Errorf("%w (%d bytes, limit %d)", ErrMediaTooLarge, declared, maxSize)
	}
	data, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read media: %w", err)
	}
	if int64(len(data)) > maxSize {
		return nil, fmt.Errorf("%w (limit %d bytes)", ErrMediaTooLarge, maxSize)
	}
	return data, nil
}

// sniffContentType keeps a server's specific Content-Type and sniffs one
// (the WHATWG algorithm, net/http's) when it is missing, malformed or
// only says "bytes".
func sniffContentType(header string, data []byte) string {
	mediaType, params, err := mime.ParseMediaType(header)
	if err == nil && strings.Contains(mediaType, "/") && mediaType != "application/octet-stream" && mediaType != "binary/octet-stream" {
		if ct := mime.FormatMediaType(mediaType, params); ct != "" {
			return ct
		}
	}
	return http.DetectContentType(data)
}

// remoteFileName is the filename of Content-Disposition, or else the last
// segment of the URL's path ("" when there is none).
func remoteFileName(disposition string, u *url.URL) string {
	if _, params, err := mime.ParseMediaType(disposition); err == nil && params["filename"] != "" {
		return path.Base(params["filename"])
	}
	if name := path.Base(u.Path); name != "/" && name != "." {
		return name
	}
	return ""
}
