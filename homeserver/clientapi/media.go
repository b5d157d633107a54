package clientapi

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/media"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/netguard"
)

// Content repository error codes mautrix has no constant for.
var (
	errNotYetUploaded     = mautrix.RespError{ErrCode: "M_NOT_YET_UPLOADED", StatusCode: http.StatusGatewayTimeout}
	errCannotOverwrite    = mautrix.RespError{ErrCode: "M_CANNOT_OVERWRITE_MEDIA", StatusCode: http.StatusConflict}
	errMediaMissingParam  = mautrix.RespError{ErrCode: "M_MISSING_PARAM", StatusCode: http.StatusBadRequest}
	errCannotThumbnail    = mautrix.MUnknown.WithStatus(http.StatusBadRequest)
	errPreviewFetchFailed = mautrix.MUnknown.WithStatus(http.StatusBadGateway)
)

const (
	// defaultMediaWait is timeout_ms's default (the spec's), maxMediaWait
	// the most a download waits for a pending upload whatever it asks.
	defaultMediaWait = 20 * time.Second
	maxMediaWait     = 60 * time.Second
)

// registerMedia mounts the content repository. Uploads (direct, and
// asynchronous: create, then PUT) stay under /_matrix/media (the spec has
// not moved them); downloads and thumbnails are served on the
// authenticated /_matrix/client/v1/media paths, and on the deprecated
// unauthenticated ones only when media.legacy_unauthenticated_media is set.
// URL previews answer on both, with an access token, when
// media.url_preview is on.
func (a *API) registerMedia(r gin.IRouter) {
	legacyDownload, legacyThumbnail := a.legacyMedia("download", a.serveMedia), a.legacyMedia("thumbnail", a.serveThumbnail)
	for _, version := range []string{"v3", "r0"} {
		g := r.Group("/_matrix/media/" + version)
		g.POST("/upload", a.authed(a.postUpload))
		g.GET("/config", a.authed(a.getMediaConfig))
		g.GET("/download/:serverName/:mediaID", legacyDownload)
		g.GET("/download/:serverName/:mediaID/:fileName", legacyDownload)
		g.GET("/thumbnail/:serverName/:mediaID", legacyThumbnail)
		g.GET("/preview_url", a.authed(a.getPreviewURL))
	}
	r.PUT("/_matrix/media/v3/upload/:serverName/:mediaID", a.authed(a.putUpload))
	r.POST("/_matrix/media/v1/create", a.authed(a.postCreateMedia))
	g := r.Group("/_matrix/client/v1/media")
	g.GET("/config", a.authed(a.getMediaConfig))
	g.GET("/download/:serverName/:mediaID", a.authed(a.getDownload))
	g.GET("/download/:serverName/:mediaID/:fileName", a.authed(a.getDownload))
	g.GET("/thumbnail/:serverName/:mediaID", a.authed(a.getThumbnail))
	g.GET("/preview_url", a.authed(a.getPreviewURL))
}

func (a *API) getMediaConfig(c *gin.Context, _ *storage.Session) {
	c.JSON(http.StatusOK, gin.H{"m.upload.size": a.media.MaxUploadSize()})
}

func (a *API) postUpload(c *gin.Context, sess *storage.Session) {
	uri, err := a.media.Upload(c.Request.Context(), a.uploadBody(c), a.uploadInfo(c, sess))
	if err != nil {
		a.uploadError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"content_uri": uri.String()})
}

// postCreateMedia reserves an mxc:// URI for an asynchronous upload.
func (a *API) postCreateMedia(c *gin.Context, sess *storage.Session) {
	uri, expires, err := a.media.Create(c.Request.Context(), sess.UserID)
	var tooMany *media.TooManyPendingError
	if errors.As(err, &tooMany) {
		rateLimited(c, tooMany.RetryAfter)
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"content_uri": uri.String(), "unused_expires_at": expires.UnixMilli()})
}

// putUpload uploads the content of a URI reserved with postCreateMedia.
func (a *API) putUpload(c *gin.Context, sess *storage.Session) {
	err := a.media.UploadTo(c.Request.Context(), c.Param("serverName"), c.Param("mediaID"), a.uploadBody(c), a.uploadInfo(c, sess))
	switch {
	case errors.Is(err, media.ErrNotFound):
		fail(c, mautrix.MNotFound.WithMessage("Unknown media ID: it was not created with /_matrix/media/v1/create, or it expired"))
	case errors.Is(err, media.ErrNotCreator):
		fail(c, mautrix.MForbidden.WithMessage("This media ID was created by another user"))
	case errors.Is(err, media.ErrCannotOverwrite):
		fail(c, errCannotOverwrite.WithMessage("Media already uploaded"))
	case err != nil:
		a.uploadError(c, err)
	default:
		c.JSON(http.StatusOK, gin.H{})
	}
}

func (a *API) uploadBody(c *gin.Context) io.Reader {
	return &slowUploadReader{r: c.Request.Body, rc: http.NewResponseController(c.Writer), idle: a.cfg.HTTP.ReadTimeout.D()}
}

func (a *API) uploadInfo(c *gin.Context, sess *storage.Session) media.Upload {
	return media.Upload{
		ContentType:  c.GetHeader("Content-Type"),
		FileName:     c.Query("filename"),
		UserID:       sess.UserID,
		DeclaredSize: c.Request.ContentLength,
	}
}

// uploadError answers the errors both upload endpoints share.
func (a *API) uploadError(c *gin.Context, err error) {
	switch {
	case errors.Is(err, media.ErrTooLarge):
		fail(c, mautrix.MTooLarge.WithMessage("Uploads are limited to %d bytes", a.media.MaxUploadSize()))
	case errors.Is(err, media.ErrQuotaExceeded):
		// The spec's answer for a user over quota (upload endpoints, 403).
		fail(c, mautrix.MForbidden.WithMessage("Upload quota exceeded: your uploads may take at most %d bytes in all", a.cfg.Media.UserQuota))
	case errors.Is(err, media.ErrBadFileName):
		fail(c, mautrix.MInvalidParam.WithMessage("filename must be at most %d bytes", media.MaxFileNameLength))
	case errors.Is(err, media.ErrBodyRead):
		zerolog.Ctx(c.Request.Context()).Debug().Err(err).Msg("Upload body could not be read")
		fail(c, mautrix.MUnknown.WithMessage("Could not read the uploaded content").WithStatus(http.StatusBadRequest))
	default:
		a.internalError(c, err)
	}
}

// slowUploadReader lets an upload take longer than http.read_timeout as
// long as data keeps coming: reads push the connection's read deadline one
// read_timeout ahead, so the timeout bounds a stall rather than the whole
// transfer of a large file over a slow link.
type slowUploadReader struct {
	r        io.Reader
	rc       *http.ResponseController
	idle     time.Duration
	extended time.Time
}

func (s *slowUploadReader) Read(p []byte) (int, error) {
	// Extending at most every quarter timeout keeps syscalls off the hot
	// path and still leaves a read at least 3/4 of the timeout to wait.
	if now := time.Now(); s.idle > 0 && now.Sub(s.extended) >= s.idle/4 {
		if err := s.rc.SetReadDeadline(now.Add(s.idle)); err == nil {
			s.extended = now
		} else {
			s.idle = 0 // the connection cannot: keep the server's deadline
		}
	}
	return s.r.Read(p)
}

func (a *API) getDownload(c *gin.Context, _ *storage.Session) { a.serveMedia(c) }

// legacyMedia serves /_matrix/media/{v3,r0}/download and thumbnail with
// serve. The spec froze these unauthenticated endpoints (v1.11/v1.12); by
// default, unless media.legacy_unauthenticated_media is set, they answer
// 404 as a frozen endpoint may.
func (a *API) legacyMedia(endpoint string, serve gin.HandlerFunc) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !a.cfg.Media.LegacyUnauthenticatedMedia {
			fail(c, mautrix.MNotFound.WithMessage("Unauthenticated media is disabled: use /_matrix/client/v1/media/%s", endpoint))
			return
		}
		serve(c)
	}
}

// mediaWait parses timeout_ms: how long to wait for content that was
// created but not uploaded yet.
func mediaWait(c *gin.Context) (time.Duration, bool) {
	raw, ok := c.GetQuery("timeout_ms")
	if !ok {
		return defaultMediaWait, true
	}
	ms, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || ms < 0 {
		fail(c, mautrix.MInvalidParam.WithMessage("timeout_ms must be a non-negative integer"))
		return 0, false
	}
	return time.Duration(min(ms, maxMediaWait.Milliseconds())) * time.Millisecond, true
}

// openError answers the errors of opening media; false if there was none.
func (a *API) openError(c *gin.Context, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, media.ErrNotFound):
		fail(c, mautrix.MNotFound.WithMessage("Media not found"))
	case errors.Is(err, media.ErrNotYetUploaded):
		fail(c, errNotYetUploaded.WithMessage("Content has not yet been uploaded"))
	case errors.Is(err, media.ErrContentMissing):
		// Our fault, but a 500 would make clients retry for ever.
		zerolog.Ctx(c.Request.Context()).Error().Err(err).
			Msg("Media row without its file: do all homeserver processes share media.store_path?")
		fail(c, mautrix.MNotFound.WithMessage("Media not found"))
	default:
		a.internalError(c, err)
	}
	return true
}

func (a *API) serveMedia(c *gin.Context) {
	wait, ok := mediaWait(c)
	if !ok {
		return
	}
	content, err := a.media.OpenWait(c.Request.Context(), c.Param("serverName"), c.Param("mediaID"), wait)
	if a.openError(c, err) {
		return
	}
	defer content.Close()
	name := content.UploadName
	if override := c.Param("fileName"); override != "" {
		name = override
	}
	media.Serve(c.Writer, c.Request, content, name)
}

func (a *API) getThumbnail(c *gin.Context, _ *storage.Session) { a.serveThumbnail(c) }

func (a *API) serveThumbnail(c *gin.Context) {
	var req media.ThumbnailRequest
	for _, p := range []struct {
		name string
		to   *int
	}{{"width", &req.Width}, {"height", &req.Height}} {
		raw, ok := c.GetQuery(p.name)
		if !ok {
			fail(c, errMediaMissingParam.WithMessage("%s is required", p.name))
			return
		}
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			fail(c, mautrix.MInvalidParam.WithMessage("%s must be a positive integer", p.name))
			return
		}
		*p.to = n
	}
	switch req.Method = c.DefaultQuery("method", config.ThumbnailScale); req.Method {
	case config.ThumbnailCrop, config.ThumbnailScale:
	default:
		fail(c, mautrix.MInvalidParam.WithMessage("method must be crop or scale"))
		return
	}
	switch c.Query("animated") {
	case "", "false":
	case "true":
		req.Animated = true
	default:
		fail(c, mautrix.MInvalidParam.WithMessage("animated must be true or false"))
		return
	}
	wait, ok := mediaWait(c)
	if !ok {
		return
	}
	thumb, err := a.media.Thumbnail(c.Request.Context(), c.Param("serverName"), c.Param("mediaID"), req, wait)
	switch {
	case errors.Is(err, media.ErrCannotThumbnail):
		fail(c, errCannotThumbnail.WithMessage("Cannot generate thumbnails for the requested content"))
		return
	case errors.Is(err, media.ErrImageTooLarge):
		fail(c, mautrix.MTooLarge.WithMessage("Content is too large to thumbnail"))
		return
	case a.openError(c, err):
		return
	}
	defer thumb.Close()
	media.ServeThumbnail(c.Writer, c.Request, thumb)
}

// previewRateLimited refuses a preview's fetch until RetryAfter.
type previewRateLimited struct{ RetryAfter time.Duration }

func (e *previewRateLimited) Error() string { return "too many URL previews fetched" }

// getPreviewURL serves GET …/preview_url. Off (the default), the endpoint
// is not there: 404 M_UNRECOGNIZED, as from a server without it.
func (a *API) getPreviewURL(c *gin.Context, sess *storage.Session) {
	if !a.media.PreviewsEnabled() {
		NotFound(c)
		return
	}
	rawURL, ok := c.GetQuery("url")
	if !ok {
		fail(c, errMediaMissingParam.WithMessage("url is required"))
		return
	}
	if ts, ok := c.GetQuery("ts"); ok {
		// A preferred point in time; the newest preview is always fine.
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			fail(c, mautrix.MInvalidParam.WithMessage("ts must be an integer"))
			return
		}
	}
	preview, err := a.media.PreviewURL(c.Request.Context(), rawURL, func() error {
		// Per user, fetches only (rate_limits.url_preview): cached
		// previews are cheap, fetching pages is not.
		if ok, retry := a.previewLimit.Allow(string(sess.UserID)); !ok {
			return &previewRateLimited{RetryAfter: retry}
		}
		return nil
	})
	var blocked *netguard.BlockedError
	var limited *previewRateLimited
	switch {
	case errors.As(err, &limited):
		rateLimited(c, limited.RetryAfter)
	case errors.As(err, &blocked):
		zerolog.Ctx(c.Request.Context()).Info().Str("address", blocked.Addr.String()).
			Msg("URL preview refused: the address is not public (media.url_preview.allowed_networks)")
		fail(c, mautrix.MForbidden.WithMessage("This URL cannot be previewed: its address is not allowed"))
	case errors.Is(err, media.ErrBadPreviewURL):
		fail(c, mautrix.MInvalidParam.WithMessage("url must be an absolute http or https URL"))
	case errors.Is(err, media.ErrPreviewTooLarge):
		fail(c, mautrix.MTooLarge.WithMessage("The content at this URL is too large to preview").WithStatus(http.StatusBadGateway))
	case errors.Is(err, media.ErrPreviewFetch):
		zerolog.Ctx(c.Request.Context()).Debug().Err(err).Msg("URL preview fetch failed")
		fail(c, errPreviewFetchFailed.WithMessage("Could not fetch the URL to preview"))
	case err != nil:
		a.internalError(c, err)
	default:
		c.Data(http.StatusOK, "application/json", preview)
	}
}
