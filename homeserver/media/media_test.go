package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

var ctx = context.Background()

const alice = id.UserID("@alice:localhost")

// newRepo opens a Repo on a fresh database and store.
func newRepo(t testing.TB, uri string, mutate func(*config.Config)) *Repo {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Database = uri
	if mutate != nil {
		mutate(cfg)
	}
	db, err := storage.Open(ctx, uri, cfg.DataDir, 0, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r, err := New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pattern is a test image: a gradient with a red left half and blue top
// rows on the right, so orientation and cropping show; with alpha, its
// left eighth and bottom eighth are transparent.
func pattern(w, h int, alpha bool) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 100, 255}
			if x < w/2 {
				c.R, c.G, c.B = 255, 0, 0
			} else if y < h/4 {
				c.R, c.G, c.B = 0, 0, 255
			}
			if alpha && (x < w/8 || y >= h*7/8) {
				c.A = 0
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// encodeGIF makes a GIF of the given frames (one: a still).
func encodeGIF(t testing.TB, w, h, frames int) []byte {
	t.Helper()
	anim := &gif.GIF{}
	palette := color.Palette{color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}, color.RGBA{0, 255, 0, 255}}
	for i := range frames {
		img := image.NewPaletted(image.Rect(0, 0, w, h), palette)
		for y := range h {
			for x := range w {
				img.SetColorIndex(x, y, uint8((x/8+y/8+i)%3))
			}
		}
		anim.Image = append(anim.Image, img)
		anim.Delay = append(anim.Delay, 10)
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, anim); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withOrientation inserts an EXIF APP1 segment with the given orientation
// after a JPEG's SOI marker, as a phone camera writes it.
func withOrientation(jpg []byte, orientation uint16) []byte {
	tiff := []byte("II*\x00\x08\x00\x00\x00") // little-endian, IFD0 at 8
	tiff = binary.LittleEndian.AppendUint16(tiff, 1)
	tiff = binary.LittleEndian.AppendUint16(tiff, 0x0112)
	tiff = binary.LittleEndian.AppendUint16(tiff, 3) // SHORT
	tiff = binary.LittleEndian.AppendUint32(tiff, 1)
	tiff = binary.LittleEndian.AppendUint16(tiff, orientation)
	tiff = append(tiff, 0, 0, 0, 0, 0, 0) // value padding, no next IFD
	seg := append([]byte("Exif\x00\x00"), tiff...)
	out := append([]byte{0xff, 0xd8, 0xff, 0xe1}, byte((len(seg)+2)>>8), byte(len(seg)+2))
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func upload(t testing.TB, r *Repo, data []byte, contentType string) id.ContentURI {
	t.Helper()
	uri, err := r.Upload(ctx, bytes.NewReader(data), Upload{ContentType: contentType, UserID: alice, DeclaredSize: int64(len(data))})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	return uri
}

// thumbnail requests a thumbnail and returns its type and bytes.
func thumbnail(t testing.TB, r *Repo, uri id.ContentURI, req ThumbnailRequest) (string, []byte) {
	t.Helper()
	th, err := r.Thumbnail(ctx, uri.Homeserver, uri.FileID, req, 0)
	if err != nil {
		t.Fatalf("thumbnail %+v: %v", req, err)
	}
	defer th.Close()
	data, err := io.ReadAll(th.File)
	if err != nil {
		t.Fatal(err)
	}
	return th.ContentType, data
}

func decode(t testing.TB, data []byte) (image.Image, string) {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("thumbnail does not decode: %v", err)
	}
	return img, format
}

// Thumbnails of every input format, by crop and scale, have the sizes the
// spec's rules give — on SQLite and PostgreSQL.
func TestThumbnailSizes(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		r := newRepo(t, uri, nil)
		photo := pattern(1200, 800, false)
		inputs := map[string][]byte{
			"jpeg":       encodeJPEG(t, photo),
			"png":        encodePNG(t, photo),
			"png-alpha":  encodePNG(t, pattern(1200, 800, true)),
			"gif":        encodeGIF(t, 1200, 800, 1),
			"webp":       readTestdata(t, "photo.webp"), // 400×300, lossy
			"webp-alpha": readTestdata(t, "alpha.webp"), // 300×200, lossless with alpha
		}
		for _, tc := range []struct {
			input    string
			req      ThumbnailRequest
			w, h     int
			wantType string
		}{
			{"jpeg", ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}, 32, 32, "image/jpeg"},
			{"jpeg", ThumbnailRequest{Width: 96, Height: 96, Method: "crop"}, 96, 96, "image/jpeg"},
			{"jpeg", ThumbnailRequest{Width: 50, Height: 40, Method: "crop"}, 96, 96, "image/jpeg"}, // next size up
			{"jpeg", ThumbnailRequest{Width: 320, Height: 240, Method: "scale"}, 320, 213, "image/jpeg"},
			{"jpeg", ThumbnailRequest{Width: 600, Height: 400, Method: "scale"}, 640, 427, "image/jpeg"},
			{"jpeg", ThumbnailRequest{Width: 800, Height: 600, Method: "scale"}, 800, 533, "image/jpeg"},
			{"jpeg", ThumbnailRequest{Width: 200, Height: 200, Method: "crop"}, 320, 240, "image/jpeg"}, // beyond the crop sizes
			{"png", ThumbnailRequest{Width: 320, Height: 240, Method: "scale"}, 320, 213, "image/jpeg"},
			{"png-alpha", ThumbnailRequest{Width: 96, Height: 96, Method: "crop"}, 96, 96, "image/png"},
			{"png-alpha", ThumbnailRequest{Width: 640, Height: 480, Method: "scale"}, 640, 427, "image/png"},
			{"gif", ThumbnailRequest{Width: 96, Height: 96, Method: "crop"}, 96, 96, "image/jpeg"},
			{"webp", ThumbnailRequest{Width: 320, Height: 240, Method: "scale"}, 320, 240, "image/jpeg"},
			{"webp", ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}, 32, 32, "image/jpeg"},
			{"webp-alpha", ThumbnailRequest{Width: 96, Height: 96, Method: "crop"}, 96, 96, "image/png"},
			{"webp-alpha", ThumbnailRequest{Width: 100, Height: 100, Method: "scale"}, 300, 200, "image/webp"}, // smaller than 320×240: the original
		} {
			mxc := upload(t, r, inputs[tc.input], "application/octet-stream")
			ct, data := thumbnail(t, r, mxc, tc.req)
			img, _ := decode(t, data)
			if b := img.Bounds(); ct != tc.wantType || b.Dx() != tc.w || b.Dy() != tc.h {
				t.Errorf("%s %+v: %s %dx%d, want %s %dx%d", tc.input, tc.req, ct, b.Dx(), b.Dy(), tc.wantType, tc.w, tc.h)
			}
		}
	})
}

// Crops come from the centre; scaled thumbnails keep the whole picture;
// transparency survives into PNG thumbnails.
func TestThumbnailContent(t *testing.T) {
	r := newRepo(t, testdb.SQLiteURI(t), nil)
	// 1200×400: a centred square crop shows the red left half's right
	// end and the right half's left end.
	mxc := upload(t, r, encodePNG(t, pattern(1200, 400, true)), "image/png")
	_, data := thumbnail(t, r, mxc, ThumbnailRequest{Width: 96, Height: 96, Method: "crop"})
	img, _ := decode(t, data)
	if r, _, _, a := img.At(10, 50).RGBA(); r>>8 < 200 || a>>8 < 250 {
		t.Errorf("crop: left of centre is %v, want opaque red", img.At(10, 50))
	}
	_, data = thumbnail(t, r, mxc, ThumbnailRequest{Width: 320, Height: 240, Method: "scale"})
	img, _ = decode(t, data)
	if b := img.Bounds(); b.Dx() != 320 || b.Dy() != 107 {
		t.Fatalf("scale: %v", b)
	}
	if _, _, _, a := img.At(5, 50).RGBA(); a != 0 {
		t.Errorf("scale: the transparent left edge has alpha %d", a>>8)
	}
	if _, _, b, _ := img.At(300, 5).RGBA(); b>>8 < 200 {
		t.Errorf("scale: top right is %v, want blue", img.At(300, 5))
	}
}

// A JPEG with EXIF orientation 6 (stored on its side, as phones do) gets
// an upright thumbnail.
func TestThumbnailEXIFOrientation(t *testing.T) {
	r := newRepo(t, testdb.SQLiteURI(t), nil)
	// Stored 800×400, left half red; shown rotated 90° clockwise:
	// 400×800 with the red half on top.
	mxc := upload(t, r, withOrientation(encodeJPEG(t, pattern(800, 400, false)), 6), "image/jpeg")
	_, data := thumbnail(t, r, mxc, ThumbnailRequest{Width: 320, Height: 240, Method: "scale"})
	img, _ := decode(t, data)
	if b := img.Bounds(); b.Dx() != 120 || b.Dy() != 240 {
		t.Fatalf("oriented thumbnail is %dx%d, want 120x240", b.Dx(), b.Dy())
	}
	if red, _, blue, _ := img.At(60, 30).RGBA(); red>>8 < 200 || blue>>8 > 60 {
		t.Errorf("top of the upright thumbnail is %v, want red", img.At(60, 30))
	}
	// The stored image's blue top rows are now its right edge.
	if red, _, blue, _ := img.At(110, 200).RGBA(); blue>>8 < 200 || red>>8 > 60 {
		t.Errorf("bottom right of the upright thumbnail is %v, want blue", img.At(110, 200))
	}
}

// Images smaller than the request come back as they are; animations only
// when animated=true, else a still.
func TestThumbnailOriginalsAndAnimations(t *testing.T) {
	r := newRepo(t, testdb.SQLiteURI(t), nil)
	small := encodePNG(t, pattern(20, 10, false))
	mxc := upload(t, r, small, "image/png")
	ct, data := thumbnail(t, r, mxc, ThumbnailRequest{Width: 32, Height: 32, Method: "crop"})
	if ct != "image/png" || !bytes.Equal(data, small) {
		t.Errorf("small image: %s, %d bytes; want the original PNG", ct, len(data))
	}
	// The type served is what the bytes are, not what the upload said.
	mxc = upload(t, r, small, "text/html")
	if ct, _ := thumbnail(t, r, mxc, ThumbnailRequest{Width: 32, Height: 32, Method: "scale"}); ct != "image/png" {
		t.Errorf("PNG uploaded as text/html: thumbnail served as %s", ct)
	}

	anim := encodeGIF(t, 64, 48, 3)
	mxc = upload(t, r, anim, "image/gif")
	ct, data = thumbnail(t, r, mxc, ThumbnailRequest{Width: 96, Height: 96, Method: "scale", Animated: true})
	if ct != "image/gif" || !bytes.Equal(data, anim) {
		t.Errorf("animated=true, small animation: %s, %d bytes; want the original GIF", ct, len(data))
	}
	ct, data = thumbnail(t, r, mxc, ThumbnailRequest{Width: 96, Height: 96, Method: "scale"})
	if img, format := decode(t, data); ct != "image/jpeg" || format != "jpeg" || img.Bounds().Dx() != 64 {
		t.Errorf("animated unset: %s (%s) %v; want a 64x48 still", ct, format, img.Bounds())
	}
	big := upload(t, r, encodeGIF(t, 640, 480, 2), "image/gif")
	ct, data = thumbnail(t, r, big, ThumbnailRequest{Width: 32, Height: 32, Method: "crop", Animated: true})
	if img, _ := decode(t, data); ct == "image/gif" || img.Bounds().Dx() != 32 {
		t.Errorf("large animation: %s %v; want a 32x32 still", ct, img.Bounds())
	}

	// Animated WebP: the original when small and animated=true; a still
	// cannot be made (no decoder for animated WebP): 400.
	animWebP := readTestdata(t, "animated.webp")
	mxc = upload(t, r, animWebP, "image/webp")
	ct, data = thumbnail(t, r, mxc, ThumbnailRequest{Width: 96, Height: 96, Method: "scale", Animated: true})
	if ct != "image/webp" || !bytes.Equal(data, animWebP) {
		t.Errorf("animated WebP: %s, %d bytes; want the original", ct, len(data))
	}
	if _, err := r.Thumbnail(ctx, mxc.Homeserver, mxc.FileID, ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}, 0); !errors.Is(err, ErrCannotThumbnail) {
		t.Errorf("still of an animated WebP: %v, want ErrCannotThumbnail", err)
	}
}

// Content that is not an image cannot be thumbnailed; an image whose
// header claims more pixels than max_thumbnail_pixels is refused before
// anything is decoded.
func TestThumbnailRefusals(t *testing.T) {
	r := newRepo(t, testdb.SQLiteURI(t), func(c *config.Config) { c.Media.MaxThumbnailPixels = 1_000_000 })
	for _, data := range [][]byte{[]byte("%PDF-1.4 not an image"), []byte("\x89PNG\r\n\x1a\ntruncated"), {}} {
		mxc := upload(t, r, data, "image/png")
		if _, err := r.Thumbnail(ctx, mxc.Homeserver, mxc.FileID, ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}, 0); !errors.Is(err, ErrCannotThumbnail) {
			t.Errorf("%q: %v, want ErrCannotThumbnail", data, err)
		}
	}
	// A decompression bomb: a valid PNG header for 100000×100000 pixels
	// (40 GB decoded) followed by a few bytes of data.
	var bomb bytes.Buffer
	bomb.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := binary.BigEndian.AppendUint32(nil, 100000)
	ihdr = binary.BigEndian.AppendUint32(ihdr, 100000)
	ihdr = append(ihdr, 8, 6, 0, 0, 0)
	writeChunk(&bomb, "IHDR", ihdr)
	writeChunk(&bomb, "IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	mxc := upload(t, r, bomb.Bytes(), "image/png")
	if _, err := r.Thumbnail(ctx, mxc.Homeserver, mxc.FileID, ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}, 0); !errors.Is(err, ErrImageTooLarge) {
		t.Errorf("decompression bomb: %v, want ErrImageTooLarge", err)
	}
	// Just over the limit, for real.
	mxc = upload(t, r, encodeJPEG(t, pattern(1001, 1000, false)), "image/jpeg")
	if _, err := r.Thumbnail(ctx, mxc.Homeserver, mxc.FileID, ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}, 0); !errors.Is(err, ErrImageTooLarge) {
		t.Errorf("1001x1000 with a 1000000-pixel limit: %v, want ErrImageTooLarge", err)
	}
	if r.ThumbnailsGenerated() != 0 {
		t.Errorf("%d thumbnails generated from refused images", r.ThumbnailsGenerated())
	}
}

func writeChunk(w *bytes.Buffer, typ string, data []byte) {
	w.Write(binary.BigEndian.AppendUint32(nil, uint32(len(data))))
	w.WriteString(typ)
	w.Write(data)
	w.Write(binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(append([]byte(typ), data...))))
}

// A thumbnail is generated once: later requests, concurrent ones, and
// requests for other uploads of the same bytes, are served from the cache.
func TestThumbnailGeneratedOnce(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		r := newRepo(t, uri, nil)
		data := encodeJPEG(t, pattern(1600, 1200, false))
		first, second := upload(t, r, data, "image/jpeg"), upload(t, r, data, "image/jpeg")
		req := ThumbnailRequest{Width: 320, Height: 240, Method: "scale"}

		var wg sync.WaitGroup
		results := make([][]byte, 16)
		for i := range results {
			wg.Go(func() {
				mxc := first
				if i%2 == 1 {
					mxc = second
				}
				th, err := r.Thumbnail(ctx, mxc.Homeserver, mxc.FileID, req, 0)
				if err != nil {
					t.Error(err)
					return
				}
				defer th.Close()
				results[i], _ = io.ReadAll(th.File)
			})
		}
		wg.Wait()
		if n := r.ThumbnailsGenerated(); n != 1 {
			t.Fatalf("16 concurrent requests generated %d thumbnails, want 1", n)
		}
		for i, res := range results {
			if !bytes.Equal(res, results[0]) || len(res) == 0 {
				t.Fatalf("request %d got different bytes", i)
			}
		}
		thumbnail(t, r, first, req)
		thumbnail(t, r, second, ThumbnailRequest{Width: 300, Height: 200, Method: "scale"}) // the same size
		if n := r.ThumbnailsGenerated(); n != 1 {
			t.Fatalf("cached thumbnail generated again: %d", n)
		}
		// Another process (a new Repo on the same database and store)
		// finds it too.
		cfg := config.Default()
		cfg.Media.StorePath = r.dir
		other, err := New(r.db, cfg)
		if err != nil {
			t.Fatal(err)
		}
		thumbnail(t, other, second, req)
		if n := other.ThumbnailsGenerated(); n != 0 {
			t.Fatalf("another process generated the cached thumbnail again")
		}
		// A thumbnail whose file went missing is made again.
		th, err := r.Thumbnail(ctx, first.Homeserver, first.FileID, req, 0)
		if err != nil {
			t.Fatal(err)
		}
		th.Close()
		if err := os.Remove(r.path(th.ContentHash)); err != nil {
			t.Fatal(err)
		}
		if _, again := thumbnail(t, r, first, req); !bytes.Equal(again, results[0]) || r.ThumbnailsGenerated() != 2 {
			t.Fatalf("missing thumbnail file: regenerated %d, same bytes %v", r.ThumbnailsGenerated()-1, bytes.Equal(again, results[0]))
		}
		// A new size is a new thumbnail.
		thumbnail(t, r, first, ThumbnailRequest{Width: 32, Height: 32, Method: "crop"})
		if n := r.ThumbnailsGenerated(); n != 3 {
			t.Fatalf("a new size: %d generated, want 3", n)
		}
	})
}

// The size rules, without images.
func TestPlanThumbnail(t *testing.T) {
	sizes := config.DefaultThumbnailSizes()
	for _, tc := range []struct {
		srcW, srcH int
		req        ThumbnailRequest
		want       thumbnailPlan
	}{
		// Smaller than the request: the original.
		{30, 30, ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}, thumbnailPlan{original: true}},
		// Crop to the box.
		{1000, 500, ThumbnailRequest{Width: 32, Height: 32, Method: "crop"},
			thumbnailPlan{size: config.ThumbnailSize{Width: 32, Height: 32, Method: "crop"}, cropW: 500, cropH: 500, w: 32, h: 32}},
		// A crop box larger than the image: the region, not enlarged.
		{60, 200, ThumbnailRequest{Width: 40, Height: 40, Method: "crop"},
			thumbnailPlan{size: config.ThumbnailSize{Width: 96, Height: 96, Method: "crop"}, cropW: 60, cropH: 60, w: 60, h: 60}},
		// Scale fits within the box.
		{4000, 1000, ThumbnailRequest{Width: 320, Height: 240, Method: "scale"},
			thumbnailPlan{size: config.ThumbnailSize{Width: 320, Height: 240, Method: "scale"}, cropW: 4000, cropH: 1000, w: 320, h: 80}},
		// Already within the box: the original, not enlarged.
		{300, 200, ThumbnailRequest{Width: 250, Height: 100, Method: "scale"}, thumbnailPlan{original: true}},
		// Larger than every size: the original (a smaller thumbnail is
		// forbidden).
		{4000, 3000, ThumbnailRequest{Width: 1000, Height: 1000, Method: "scale"}, thumbnailPlan{original: true}},
		// Unknown method sizes: the smallest covering size of any method.
		{4000, 3000, ThumbnailRequest{Width: 300, Height: 200, Method: "crop"},
			thumbnailPlan{size: config.ThumbnailSize{Width: 320, Height: 240, Method: "crop"}, cropW: 4000, cropH: 3000, w: 320, h: 240}},
	} {
		got := planThumbnail(&imageInfo{width: tc.srcW, height: tc.srcH, orientation: 1}, tc.req, sizes)
		if got != tc.want {
			t.Errorf("%dx%d %+v: %+v, want %+v", tc.srcW, tc.srcH, tc.req, got, tc.want)
		}
	}
}

// Header scanners on real files.
func TestProbe(t *testing.T) {
	for name, tc := range map[string]struct {
		data        []byte
		format      string
		w, h        int
		animated    bool
		orientation int
	}{
		"jpeg":          {encodeJPEG(t, pattern(40, 30, false)), "jpeg", 40, 30, false, 1},
		"jpeg-exif":     {withOrientation(encodeJPEG(t, pattern(40, 30, false)), 8), "jpeg", 40, 30, false, 8},
		"png":           {encodePNG(t, pattern(40, 30, true)), "png", 40, 30, false, 1},
		"gif":           {encodeGIF(t, 40, 30, 1), "gif", 40, 30, false, 1},
		"gif-animated":  {encodeGIF(t, 40, 30, 2), "gif", 40, 30, true, 1},
		"webp":          {readTestdata(t, "photo.webp"), "webp", 400, 300, false, 1},
		"webp-alpha":    {readTestdata(t, "alpha.webp"), "webp", 300, 200, false, 1},
		"webp-animated": {readTestdata(t, "animated.webp"), "webp", 64, 48, true, 1},
	} {
		info, err := probe(bytes.NewReader(tc.data))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		want := imageInfo{format: tc.format, width: tc.w, height: tc.h, animated: tc.animated, orientation: tc.orientation}
		if *info != want {
			t.Errorf("%s: %+v, want %+v", name, *info, want)
		}
	}
	// APNG: an acTL chunk before IDAT.
	png := encodePNG(t, pattern(8, 8, false))
	var apng bytes.Buffer
	apng.Write(png[:33]) // signature + IHDR
	writeChunk(&apng, "acTL", []byte{0, 0, 0, 1, 0, 0, 0, 0})
	apng.Write(png[33:])
	if info, err := probe(bytes.NewReader(apng.Bytes())); err != nil || !info.animated {
		t.Errorf("APNG: %+v, %v", info, err)
	}
}

// Two uploads racing to one created media ID: one wins, the other is told
// the media cannot be overwritten, and the content is the winner's.
func TestUploadToRace(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		r := newRepo(t, uri, nil)
		mxc, _, err := r.Create(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		errs := make([]error, 8)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				body := bytes.Repeat([]byte{byte('a' + i)}, 1000)
				errs[i] = r.UploadTo(ctx, mxc.Homeserver, mxc.FileID, bytes.NewReader(body), Upload{UserID: alice, DeclaredSize: -1})
			})
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won < 0:
				won = i
			case errors.Is(err, ErrCannotOverwrite):
			default:
				t.Fatalf("upload %d: %v", i, err)
			}
		}
		if won < 0 {
			t.Fatal("no upload won")
		}
		c, err := r.Open(ctx, mxc.Homeserver, mxc.FileID)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, _ := io.ReadAll(c.File)
		if !bytes.Equal(got, bytes.Repeat([]byte{byte('a' + won)}, 1000)) {
			t.Fatalf("content is not the winner's (%d)", won)
		}
		if used, _ := r.db.MediaUsage(ctx, alice); used != 1000 {
			t.Fatalf("usage %d after one upload of 1000 bytes", used)
		}
	})
}
