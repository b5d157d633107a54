package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/image/draw"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Thumbnails follow the spec's rules ("Thumbnails" in the content
// repository module): a request gets the smallest configured size at least
// as large as it asked for, never an upscaled image, and the original when
// the original is smaller than the request. Each thumbnail is generated
// once per source content (not per media ID: identical uploads share
// their thumbnails) and size, stored in the content store by its hash, and
// recorded in media_thumbnails.

// Thumbnail errors the client API maps onto spec error codes.
var (
	// ErrCannotThumbnail is content that is not an image this server can
	// thumbnail (400 M_UNKNOWN in the spec).
	ErrCannotThumbnail = errors.New("cannot thumbnail this content")
	// ErrImageTooLarge is an image with more pixels than
	// media.max_thumbnail_pixels (413 M_TOO_LARGE).
	ErrImageTooLarge = errors.New("image too large to thumbnail")
)

// ThumbnailRequest is what a client asks of GET …/thumbnail.
type ThumbnailRequest struct {
	Width, Height int
	Method        string // config.ThumbnailCrop or config.ThumbnailScale
	// Animated is the animated query parameter: only when it is true may
	// an animated image be returned.
	Animated bool
}

// ThumbnailContent is a thumbnail (or an original standing in for one)
// opened for reading; Close it.
type ThumbnailContent struct {
	File        *os.File
	ContentType string
	ContentHash string // of the bytes served: the ETag
	ModTime     time.Time
}

// Close closes the file.
func (t *ThumbnailContent) Close() error { return t.File.Close() }

// thumbnailKey names one generated thumbnail: the source's SHA-256 and the
// size (a configured one, or a still of an animation at its full size).
type thumbnailKey struct {
	source string
	size   config.ThumbnailSize
}

// ThumbnailsGenerated counts the thumbnails this Repo has generated (and
// not found in the cache).
func (r *Repo) ThumbnailsGenerated() int64 { return r.generated.Load() }

// Thumbnail returns a thumbnail of mxc://serverName/mediaID for req,
// waiting up to wait for content not uploaded yet (see OpenWait).
func (r *Repo) Thumbnail(ctx context.Context, serverName, mediaID string, req ThumbnailRequest, wait time.Duration) (*ThumbnailContent, error) {
	c, err := r.OpenWait(ctx, serverName, mediaID, wait)
	if err != nil {
		return nil, err
	}
	info, err := probe(c.File)
	if err != nil {
		c.Close()
		if errors.Is(err, errNotImage) {
			return nil, ErrCannotThumbnail
		}
		return nil, err
	}
	plan := planThumbnail(info, req, r.thumbnailSizes)
	if plan.original {
		if _, err := c.File.Seek(0, io.SeekStart); err != nil {
			c.Close()
			return nil, fmt.Errorf("seek: %w", err)
		}
		// Served with the type its bytes are, whatever the upload
		// claimed: a thumbnail is always an image served inline.
		return &ThumbnailContent{File: c.File, ContentType: imageTypes[info.format],
			ContentHash: c.ContentHash, ModTime: time.UnixMilli(c.CreatedTS)}, nil
	}
	c.Close()
	key := thumbnailKey{source: c.ContentHash, size: plan.size}
	if t, err := r.cachedThumbnail(ctx, key); err == nil {
		return r.openThumbnail(t)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if int64(info.width)*int64(info.height) > r.maxPixels {
		return nil, ErrImageTooLarge
	}
	// The generation goes on if this client leaves: others may wait for
	// it, and the next request finds it done.
	genCtx := context.WithoutCancel(ctx)
	t, err := r.thumbFlight.Do(ctx, key, func() (*storage.Thumbnail, error) {
		return r.generate(genCtx, key, info, plan)
	})
	if err != nil {
		return nil, err
	}
	return r.openThumbnail(t)
}

// cachedThumbnail returns the row of a generated thumbnail whose file is
// in the store, or storage.ErrNotFound.
func (r *Repo) cachedThumbnail(ctx context.Context, key thumbnailKey) (*storage.Thumbnail, error) {
	t, err := r.db.GetThumbnail(ctx, key.source, key.size.Width, key.size.Height, key.size.Method)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(r.path(t.ContentHash)); err != nil {
		// Gone from the store: generate it again (the row is replaced).
		return nil, storage.ErrNotFound
	}
	return t, nil
}

func (r *Repo) openThumbnail(t *storage.Thumbnail) (*ThumbnailContent, error) {
	f, err := r.openFile(t.ContentHash)
	if err != nil {
		return nil, err
	}
	return &ThumbnailContent{File: f, ContentType: t.ContentType, ContentHash: t.ContentHash, ModTime: time.UnixMilli(t.CreatedTS)}, nil
}

// thumbnailPlan is what answers a request: the original, or a thumbnail of
// the given size cut from a centred region of the image (sizes as the
// image is displayed, EXIF orientation applied).
type thumbnailPlan struct {
	original     bool
	size         config.ThumbnailSize // the cache key
	cropW, cropH int                  // the region scaled
	w, h         int                  // the thumbnail
}

// planThumbnail applies the spec's rules to a request for an image.
func planThumbnail(info *imageInfo, req ThumbnailRequest, sizes []config.ThumbnailSize) thumbnailPlan {
	sw, sh := info.displaySize()
	whole := func() thumbnailPlan {
		if !info.animated || req.Animated {
			return thumbnailPlan{original: true}
		}
		// animated=false (or absent) forbids an animation: a still of
		// the first frame, full size.
		return thumbnailPlan{size: config.ThumbnailSize{Width: sw, Height: sh, Method: config.ThumbnailScale},
			cropW: sw, cropH: sh, w: sw, h: sh}
	}
	if sw <= req.Width && sh <= req.Height {
		return whole() // smaller than asked for: the original, per the spec
	}
	box, ok := pickSize(sizes, req)
	if !ok {
		// Larger than every configured size: any thumbnail would be
		// smaller than requested, which the spec forbids.
		return whole()
	}
	p := thumbnailPlan{size: box, cropW: sw, cropH: sh}
	if box.Method == config.ThumbnailCrop {
		// The largest centred region with the box's aspect ratio,
		// scaled to the box, or left as it is when smaller.
		if sw*box.Height > sh*box.Width {
			p.cropW = max(1, (sh*box.Width+box.Height/2)/box.Height)
		} else {
			p.cropH = max(1, (sw*box.Height+box.Width/2)/box.Width)
		}
		p.w, p.h = box.Width, box.Height
		if p.cropW < box.Width {
			p.w, p.h = p.cropW, p.cropH
		}
	} else {
		p.w, p.h = fit(sw, sh, box.Width, box.Height)
	}
	if p.cropW == sw && p.cropH == sh && p.w == sw && p.h == sh {
		return whole() // nothing to cut or shrink
	}
	return p
}

// pickSize returns the smallest configured size of the requested method
// that covers the request; failing that, the smallest of any method (used
// with the requested method: the request is larger than the sizes
// configured for it); false if none covers it.
func pickSize(sizes []config.ThumbnailSize, req ThumbnailRequest) (config.ThumbnailSize, bool) {
	for _, sameMethod := range []bool{true, false} {
		var best config.ThumbnailSize
		found := false
		for _, s := range sizes {
			if (s.Method == req.Method) != sameMethod || s.Width < req.Width || s.Height < req.Height {
				continue
			}
			if !found || s.Width*s.Height < best.Width*best.Height {
				best, found = s, true
			}
		}
		if found {
			best.Method = req.Method
			return best, true
		}
	}
	return config.ThumbnailSize{}, false
}

// fit returns w×h scaled to fit within bw×bh, keeping its aspect ratio
// and never enlarged.
func fit(w, h, bw, bh int) (int, int) {
	if w <= bw && h <= bh {
		return w, h
	}
	if w*bh > h*bw { // wider than the box: width-bound
		return bw, max(1, (h*bw+w/2)/w)
	}
	return max(1, (w*bh+h/2)/h), bh
}

// generate makes, stores and records the thumbnail key; called once at a
// time per key (thumbFlight).
func (r *Repo) generate(ctx context.Context, key thumbnailKey, info *imageInfo, plan thumbnailPlan) (*storage.Thumbnail, error) {
	// Done meanwhile, by the call this one queued behind or by another
	// process?
	if t, err := r.cachedThumbnail(ctx, key); err == nil {
		return t, nil
	}
	r.decodeSlots <- struct{}{}
	defer func() { <-r.decodeSlots }()

	f, err := r.openFile(key.source)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	contentType, err := renderThumbnail(&buf, f, info, plan)
	f.Close()
	if err != nil {
		return nil, err
	}
	rc, err := r.receive(&buf, int64(buf.Len()))
	if err != nil {
		return nil, err
	}
	defer rc.discard()
	if err := rc.commit(); err != nil {
		return nil, err
	}
	t := &storage.Thumbnail{
		SourceHash: key.source, Width: key.size.Width, Height: key.size.Height, Method: key.size.Method,
		ContentHash: rc.hash, ContentType: contentType, Size: rc.size,
	}
	if err := r.db.PutThumbnail(ctx, t); err != nil {
		return nil, err
	}
	r.generated.Add(1)
	return t, nil
}

// renderThumbnail decodes the image src (described by info), cuts and
// scales it as p says, and encodes the result into w; it returns the
// Content-Type.
func renderThumbnail(w io.Writer, src io.ReadSeeker, info *imageInfo, p thumbnailPlan) (string, error) {
	img, err := decodeImage(src)
	if err != nil {
		return "", ErrCannotThumbnail
	}
	if b := img.Bounds(); b != image.Rect(0, 0, info.width, info.height) {
		// A GIF whose first frame covers part of its screen: place it.
		canvas := image.NewRGBA(image.Rect(0, 0, info.width, info.height))
		draw.Draw(canvas, b, img, b.Min, draw.Src)
		img = canvas
	}
	cropW, cropH, tw, th := p.cropW, p.cropH, p.w, p.h
	if info.transposed() {
		cropW, cropH, tw, th = cropH, cropW, th, tw
	}
	// Centred, on an even pixel (the fast path for 4:2:0 JPEGs).
	x0, y0 := (info.width-cropW)/2&^1, (info.height-cropH)/2&^1
	thumb := orient(resize(img, image.Rect(x0, y0, x0+cropW, y0+cropH), tw, th), info.orientation)
	contentType, err := encodeThumbnail(w, thumb)
	if err != nil {
		return "", fmt.Errorf("encode thumbnail: %w", err)
	}
	return contentType, nil
}

// thumbnailFileName is the file name a thumbnail is served with.
func thumbnailFileName(contentType string) string {
	ext := strings.TrimPrefix(contentType, "image/")
	if ext == "jpeg" {
		ext = "jpg"
	}
	return "thumbnail." + ext
}
