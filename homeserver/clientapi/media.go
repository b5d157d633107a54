package clientapi

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/media"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// registerMedia mounts the content repository. Uploads stay under
// /_matrix/media (the spec has not moved them); downloads are served on the
// authenticated /_matrix/client/v1/media paths, and on the deprecated
// unauthenticated ones only when media.legacy_unauthenticated_media is set.
func (a *API) registerMedia(r gin.IRouter) {
	for _, version := range []string{"v3", "r0"} {
		g := r.Group("/_matrix/media/" + version)
		g.POST("/upload", a.authed(a.postUpload))
		g.GET("/config", a.authed(a.getMediaConfig))
		g.GET("/download/:serverName/:mediaID", a.getLegacyDownload)
		g.GET("/download/:serverName/:mediaID/:fileName", a.getLegacyDownload)
	}
	g := r.Group("/_matrix/client/v1/media")
	g.GET("/config", a.authed(a.getMediaConfig))
	g.GET("/download/:serverName/:mediaID", a.authed(a.getDownload))
	g.GET("/download/:serverName/:mediaID/:fileName", a.authed(a.getDownload))
}

func (a *API) getMediaConfig(c *gin.Context, _ *storage.Session) {
	c.JSON(http.StatusOK, gin.H{"m.upload.size": a.media.MaxUploadSize()})
}

func (a *API) postUpload(c *gin.Context, sess *storage.Session) {
	body := &slowUploadReader{r: c.Request.Body, rc: http.NewResponseController(c.Writer), idle: a.cfg.HTTP.ReadTimeout.D()}
	uri, err := a.media.Upload(c.Request.Context(), body, media.Upload{
		ContentType:  c.GetHeader("Content-Type"),
		FileName:     c.Query("filename"),
		UserID:       sess.UserID,
		DeclaredSize: c.Request.ContentLength,
	})
	switch {
	case errors.Is(err, media.ErrTooLarge):
		fail(c, mautrix.MTooLarge.WithMessage("Uploads are limited to %d bytes", a.media.MaxUploadSize()))
	case errors.Is(err, media.ErrBadFileName):
		fail(c, mautrix.MInvalidParam.WithMessage("filename must be at most %d bytes", media.MaxFileNameLength))
	case errors.Is(err, media.ErrBodyRead):
		zerolog.Ctx(c.Request.Context()).Debug().Err(err).Msg("Upload body could not be read")
		fail(c, mautrix.MUnknown.WithMessage("Could not read the uploaded content").WithStatus(http.StatusBadRequest))
	case err != nil:
		a.internalError(c, err)
	default:
		c.JSON(http.StatusOK, gin.H{"content_uri": uri.String()})
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

// getLegacyDownload serves /_matrix/media/{v3,r0}/download. The spec froze
// these unauthenticated endpoints (v1.11/v1.12); by default they answer
// 404 as a frozen endpoint may.
func (a *API) getLegacyDownload(c *gin.Context) {
	if !a.cfg.Media.LegacyUnauthenticatedMedia {
		fail(c, mautrix.MNotFound.WithMessage("Unauthenticated media is disabled: use /_matrix/client/v1/media/download"))
		return
	}
	a.serveMedia(c)
}

func (a *API) serveMedia(c *gin.Context) {
	content, err := a.media.Open(c.Request.Context(), c.Param("serverName"), c.Param("mediaID"))
	switch {
	case errors.Is(err, media.ErrNotFound):
		fail(c, mautrix.MNotFound.WithMessage("Media not found"))
		return
	case errors.Is(err, media.ErrContentMissing):
		// Our fault, but a 500 would make clients retry for ever.
		zerolog.Ctx(c.Request.Context()).Error().Err(err).
			Msg("Media row without its file: do all homeserver processes share media.store_path?")
		fail(c, mautrix.MNotFound.WithMessage("Media not found"))
		return
	case err != nil:
		a.internalError(c, err)
		return
	}
	defer content.Close()
	name := content.UploadName
	if override := c.Param("fileName"); override != "" {
		name = override
	}
	media.Serve(c.Writer, c.Request, content, name)
}
