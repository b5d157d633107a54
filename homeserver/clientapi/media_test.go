package clientapi_test

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	_ "golang.org/x/image/webp"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/homeserver/media"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// testUploadLimit is media.max_upload_size on the media tests' servers.
const testUploadLimit = 64 << 10

func smallUploads(c *config.Config) { c.Media.MaxUploadSize = testUploadLimit }

// pngBytes is the start of a PNG file: enough for a browser or sniffer to
// call it an image.
var pngBytes = append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), bytes.Repeat([]byte{7}, 200)...)

var mediaIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22,}$`)

// download fetches a client-server API path as cli and returns the
// response with its body read.
func download(t *testing.T, cli *mautrix.Client, path mautrix.PrefixableURLPath, header http.Header) (*http.Response, []byte, error) {
	t.Helper()
	return fetch(t, cli, cli.BuildURL(path), header)
}

// getMedia fetches a client-server API path with a query as cli and
// returns the response with its body read.
func getMedia(t *testing.T, cli *mautrix.Client, path mautrix.PrefixableURLPath, query map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	return fetch(t, cli, cli.BuildURLWithQuery(path, query), nil)
}

func fetch(t *testing.T, cli *mautrix.Client, rawURL string, header http.Header) (*http.Response, []byte, error) {
	t.Helper()
	_, resp, err := cli.MakeFullRequestWithResp(ctx, mautrix.FullRequest{
		Method: http.MethodGet, URL: rawURL, Headers: header, DontReadResponse: true, MaxAttempts: 1,
	})
	if err != nil {
		return resp, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body, nil
}

func upload(t *testing.T, cli *mautrix.Client, data []byte, contentType, fileName string) id.ContentURI {
	t.Helper()
	resp, err := cli.UploadBytesWithName(ctx, data, contentType, fileName)
	if err != nil {
		t.Fatalf("upload %s: %v", fileName, err)
	}
	return resp.ContentURI
}

// storedFiles lists the content files in the server's media store.
func storedFiles(t *testing.T, cfg *config.Config) []string {
	t.Helper()
	var files []string
	root := cfg.ResolvePath(cfg.Media.StorePath)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "tmp" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// An upload comes back byte for byte, to its uploader and to anyone else
// with an access token, with the spec's headers — on SQLite and PostgreSQL.
func TestMediaUploadDownload(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, smallUploads)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")

		mxc := upload(t, alice, pngBytes, "image/png", "cat picture.png")
		if mxc.Homeserver != srv.Config.ServerName || !mediaIDPattern.MatchString(mxc.FileID) {
			t.Fatalf("content URI %s: want mxc://%s/ and a random URL-safe media ID", mxc, srv.Config.ServerName)
		}
		for _, cli := range []*mautrix.Client{alice, bob} {
			got, err := cli.DownloadBytes(ctx, mxc)
			if err != nil || !bytes.Equal(got, pngBytes) {
				t.Fatalf("%s downloads %d bytes, %v; want the %d uploaded", cli.UserID, len(got), err, len(pngBytes))
			}
		}

		resp, err := bob.Download(ctx, mxc)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for header, want := range map[string]string{
			"Content-Type":                 "image/png",
			"Content-Disposition":          `inline; filename="cat picture.png"`,
			"Content-Security-Policy":      media.ContentSecurityPolicy,
			"Cross-Origin-Resource-Policy": "cross-origin",
			"X-Content-Type-Options":       "nosniff",
		} {
			if got := resp.Header.Get(header); got != want {
				t.Errorf("%s = %q, want %q", header, got, want)
			}
		}
		if resp.ContentLength != int64(len(pngBytes)) {
			t.Errorf("Content-Length = %d, want %d", resp.ContentLength, len(pngBytes))
		}

		// The file name in the path overrides the uploaded one.
		resp, _, err = download(t, bob, mautrix.ClientURLPath{"v1", "media", "download", mxc.Homeserver, mxc.FileID, "renamed.png"}, nil)
		if err != nil || resp.Header.Get("Content-Disposition") != `inline; filename="renamed.png"` {
			t.Fatalf("download with a file name: %v, Content-Disposition %q", err, resp.Header.Get("Content-Disposition"))
		}

		// Range requests (resumed downloads, video seeking).
		resp, body, err := download(t, bob, mautrix.ClientURLPath{"v1", "media", "download", mxc.Homeserver, mxc.FileID},
			http.Header{"Range": {"bytes=2-9"}})
		if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, pngBytes[2:10]) {
			t.Fatalf("range request: %v, HTTP %d, %q", err, resp.StatusCode, body)
		}

		// No Content-Type: stored and served as application/octet-stream,
		// as an attachment, without a file name.
		plain := upload(t, alice, []byte("some bytes"), "", "")
		resp, err = bob.Download(ctx, plain)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("Content-Disposition") != "attachment" {
			t.Errorf("untyped upload served as %q, %q", resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
		}

		// The r0 alias of the upload endpoint.
		var r0 mautrix.RespMediaUpload
		_, err = alice.MakeFullRequest(ctx, mautrix.FullRequest{
			Method: http.MethodPost, URL: alice.BuildURLWithQuery(mautrix.MediaURLPath{"r0", "upload"}, map[string]string{"filename": "old.txt"}),
			Headers: http.Header{"Content-Type": {"text/plain"}}, RequestBytes: []byte("from an old client"), ResponseJSON: &r0,
		})
		if err != nil {
			t.Fatalf("r0 upload: %v", err)
		}
		if got, err := bob.DownloadBytes(ctx, r0.ContentURI); err != nil || string(got) != "from an old client" {
			t.Fatalf("r0 upload downloads as %q, %v", got, err)
		}

		cfg, err := alice.GetMediaConfig(ctx)
		if err != nil || cfg.UploadSize != testUploadLimit {
			t.Fatalf("media config = %+v, %v; want m.upload.size %d", cfg, err, testUploadLimit)
		}
	})
}

// The same bytes uploaded twice are stored once, under two media IDs.
func TestMediaDeduplicated(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, smallUploads)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		first := upload(t, alice, pngBytes, "image/png", "a.png")
		second := upload(t, bob, pngBytes, "image/png", "b.png")
		if first == second {
			t.Fatalf("two uploads got the same URI %s", first)
		}
		if files := storedFiles(t, srv.Config); len(files) != 1 {
			t.Fatalf("store holds %d files after two identical uploads, want 1: %v", len(files), files)
		}
		// Each keeps its own metadata.
		resp, err := alice.Download(ctx, second)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Content-Disposition") != `inline; filename="b.png"` {
			t.Errorf("second upload's disposition = %q", resp.Header.Get("Content-Disposition"))
		}
		upload(t, alice, []byte("different"), "text/plain", "")
		if files := storedFiles(t, srv.Config); len(files) != 2 {
			t.Fatalf("store holds %d files after a different upload, want 2", len(files))
		}
	})
}

// Uploads beyond media.max_upload_size get 413 M_TOO_LARGE and leave
// nothing behind; one of exactly the limit is accepted.
func TestMediaTooLarge(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), smallUploads)
	alice := srv.NewUser("alice")
	_, err := alice.UploadBytes(ctx, make([]byte, testUploadLimit+1), "application/octet-stream")
	mustErr(t, err, mautrix.MTooLarge, http.StatusRequestEntityTooLarge)
	// Without a Content-Length the server finds out while reading.
	_, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{
		Content: io.MultiReader(bytes.NewReader(make([]byte, testUploadLimit)), strings.NewReader("!")), ContentLength: -1,
		ContentType: "application/octet-stream",
	})
	mustErr(t, err, mautrix.MTooLarge, http.StatusRequestEntityTooLarge)
	if files := storedFiles(t, srv.Config); len(files) != 0 {
		t.Fatalf("refused uploads left files: %v", files)
	}
	if _, err := alice.UploadBytes(ctx, make([]byte, testUploadLimit), "application/octet-stream"); err != nil {
		t.Fatalf("upload of exactly the limit: %v", err)
	}
}

// Unknown media, media of other servers (no federation yet) and malformed
// media IDs are 404 M_NOT_FOUND.
func TestMediaNotFound(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	alice := srv.NewUser("alice")
	mxc := upload(t, alice, []byte("hello"), "text/plain", "")
	for _, uri := range []id.ContentURI{
		{Homeserver: srv.Config.ServerName, FileID: "doesNotExist123"},
		{Homeserver: "example.org", FileID: mxc.FileID},
		{Homeserver: srv.Config.ServerName, FileID: mxc.FileID + ".."},
		{Homeserver: srv.Config.ServerName, FileID: "..%2F..%2Fconfig"},
	} {
		_, err := alice.DownloadBytes(ctx, uri)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
	}
	// A row whose file is gone (a store not shared between processes) is
	// not found either, rather than an error clients would retry.
	for _, f := range storedFiles(t, srv.Config) {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	_, err := alice.DownloadBytes(ctx, mxc)
	mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
}

// The authenticated endpoints need an access token; the frozen legacy ones
// answer 404 unless media.legacy_unauthenticated_media is set.
func TestMediaAuthentication(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	alice := srv.NewUser("alice")
	mxc := upload(t, alice, []byte("secret plans"), "text/plain", "plans.txt")
	anon := srv.Client()

	_, err := anon.DownloadBytes(ctx, mxc)
	mustErr(t, err, mautrix.MMissingToken, http.StatusUnauthorized)
	_, err = anon.UploadBytes(ctx, []byte("x"), "text/plain")
	mustErr(t, err, mautrix.MMissingToken, http.StatusUnauthorized)
	_, err = anon.GetMediaConfig(ctx)
	mustErr(t, err, mautrix.MMissingToken, http.StatusUnauthorized)

	legacy := mautrix.MediaURLPath{"v3", "download", mxc.Homeserver, mxc.FileID}
	for _, cli := range []*mautrix.Client{anon, alice} {
		_, _, err = download(t, cli, legacy, nil)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
	}

	t.Run("legacy switched on", func(t *testing.T) {
		srv := hstest.Start(t, testdb.SQLiteURI(t), func(c *config.Config) { c.Media.LegacyUnauthenticatedMedia = true })
		mxc := upload(t, srv.NewUser("alice"), []byte("public notice"), "text/plain", "notice.txt")
		anon := srv.Client()
		for _, path := range []mautrix.PrefixableURLPath{
			mautrix.MediaURLPath{"v3", "download", mxc.Homeserver, mxc.FileID},
			mautrix.MediaURLPath{"r0", "download", mxc.Homeserver, mxc.FileID, "other.txt"},
		} {
			resp, body, err := download(t, anon, path, nil)
			if err != nil || string(body) != "public notice" || resp.Header.Get("Content-Security-Policy") != media.ContentSecurityPolicy {
				t.Fatalf("legacy download %v: %v, %q, CSP %q", path, err, body, resp.Header.Get("Content-Security-Policy"))
			}
		}
		_, err := anon.DownloadBytes(ctx, mxc)
		mustErr(t, err, mautrix.MMissingToken, http.StatusUnauthorized)
	})
}

// Types a browser could run (HTML, SVG, JavaScript) are served with their
// type but as attachments, under the sandbox CSP; file names that are not
// plain ASCII are encoded per RFC 6266.
func TestMediaUnsafeTypesAsAttachment(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
	for _, tc := range []struct {
		contentType, fileName, data string
		wantType, wantDisposition   string
	}{
		{"text/html", "page.html", "<script>alert(1)</script>",
			"text/html", `attachment; filename="page.html"`},
		{"text/html; charset=UTF-8", "", "<b>hi</b>",
			"text/html; charset=UTF-8", "attachment"},
		{"image/svg+xml", "logo.svg", `<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>`,
			"image/svg+xml", `attachment; filename="logo.svg"`},
		{"application/javascript", "x.js", "alert(1)",
			"application/javascript", `attachment; filename="x.js"`},
		{"Text/Plain", `say "hi".txt`, "hi",
			"text/plain", `inline; filename="say _hi_.txt"; filename*=UTF-8''say%20%22hi%22.txt`},
		{"application/pdf", "résumé.pdf", "%PDF-1.4",
			"application/pdf", `attachment; filename="r_sum_.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf`},
		{"not a type", "", "?",
			"application/octet-stream", "attachment"},
	} {
		mxc := upload(t, alice, []byte(tc.data), tc.contentType, tc.fileName)
		resp, err := bob.Download(ctx, mxc)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Type"); got != tc.wantType {
			t.Errorf("%s: Content-Type %q, want %q", tc.contentType, got, tc.wantType)
		}
		if got := resp.Header.Get("Content-Disposition"); got != tc.wantDisposition {
			t.Errorf("%s: Content-Disposition %q, want %q", tc.contentType, got, tc.wantDisposition)
		}
		if resp.Header.Get("Content-Security-Policy") != media.ContentSecurityPolicy || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: CSP %q, X-Content-Type-Options %q", tc.contentType,
				resp.Header.Get("Content-Security-Policy"), resp.Header.Get("X-Content-Type-Options"))
		}
	}
}

// Homeserver processes sharing a database and media.store_path serve each
// other's uploads.
func TestMediaSharedAcrossProcesses(t *testing.T) {
	uri := testdb.PostgresURI(t)
	store := t.TempDir()
	shared := func(c *config.Config) { c.Media.StorePath = store }
	a, b := hstest.Start(t, uri, shared), hstest.Start(t, uri, shared)
	a.CreateUser("alice", "correct horse battery staple", false)
	mxc := upload(t, a.Login("alice", "correct horse battery staple"), pngBytes, "image/png", "")
	got, err := b.Login("alice", "correct horse battery staple").DownloadBytes(ctx, mxc)
	if err != nil || !bytes.Equal(got, pngBytes) {
		t.Fatalf("download through the other process: %d bytes, %v", len(got), err)
	}
}

// Config errors name the media keys.
func TestMediaConfigValidation(t *testing.T) {
	for yaml, key := range map[string]string{
		"media: {max_upload_size: 10}":                                      "media.max_upload_size",
		"media: {store_path: ''}":                                           "media.store_path",
		"media: {legacy_unauthenticated_media: 3}":                          "legacy_unauthenticated_media",
		"media: {user_quota: -1}":                                           "media.user_quota",
		"media: {max_pending_uploads: 0}":                                   "media.max_pending_uploads",
		"media: {unused_expiry: 1s}":                                        "media.unused_expiry",
		"media: {unused_expiry: soon}":                                      "media.unused_expiry",
		"media: {thumbnail_sizes: []}":                                      "media.thumbnail_sizes",
		"media: {thumbnail_sizes: [{width: 0, height: 32, method: crop}]}":  "media.thumbnail_sizes[0]",
		"media: {thumbnail_sizes: [{width: 32, height: 32, method: fill}]}": "media.thumbnail_sizes[0].method",
		"media: {thumbnail_sizes: [{width: 32, height: 32, method: crop}, {width: 32, height: 32, method: crop}]}": "media.thumbnail_sizes[1]",
		"media: {thumbnail_sizes: [{width: 32, height: 32, colour: red}]}":                                         `unknown key "colour"`,
		"media: {max_thumbnail_pixels: 0}":                     "media.max_thumbnail_pixels",
		"media: {url_preview: {allowed_networks: [intranet]}}": "media.url_preview.allowed_networks[0]",
		"media: {url_preview: {max_page_size: 10}}":            "media.url_preview.max_page_size",
		"media: {url_preview: {timeout: 0s}}":                  "media.url_preview.timeout",
		"media: {url_preview: {cache_duration: -1s}}":          "media.url_preview.cache_duration",
		"media: {url_preview: {enabled: sometimes}}":           "media.url_preview.enabled",
	} {
		if _, err := config.Parse([]byte(yaml)); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: want an error naming %s, got %v", yaml, key, err)
		}
	}
	cfg, err := config.Parse(nil)
	if err != nil || cfg.Media.MaxUploadSize != 50<<20 || cfg.Media.LegacyUnauthenticatedMedia || cfg.Media.StorePath != "media" ||
		cfg.Media.UserQuota != 0 || cfg.Media.URLPreview.Enabled || len(cfg.Media.ThumbnailSizes) != 5 ||
		cfg.Media.MaxPendingUploads != 5 || cfg.Media.UnusedExpiry.D() != 24*time.Hour {
		t.Fatalf("defaults: %+v, %v", cfg.Media, err)
	}
	// The generated file carries the media keys and reads back the same.
	cfg.Media.UserQuota = 1 << 30
	cfg.Media.ThumbnailSizes = []config.ThumbnailSize{{Width: 48, Height: 48, Method: "crop"}, {Width: 1024, Height: 768, Method: "scale"}}
	cfg.Media.URLPreview.Enabled = true
	cfg.Media.URLPreview.AllowedNetworks = []string{"10.1.0.0/16", "fd00::/8"}
	data, err := cfg.Render()
	if err != nil {
		t.Fatal(err)
	}
	back, err := config.Parse(data)
	if err != nil {
		t.Fatalf("rendered config does not parse: %v\n%s", err, data)
	}
	if fmt.Sprint(back.Media) != fmt.Sprint(cfg.Media) {
		t.Fatalf("media section changed in the round trip:\n%+v\n%+v", back.Media, cfg.Media)
	}
}

// An upload may take longer than http.read_timeout while data keeps
// arriving (a large file on a slow link); the timeout bounds each pause.
func TestMediaSlowUpload(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), func(c *config.Config) { c.HTTP.ReadTimeout = config.Duration(time.Second) })
	alice := srv.NewUser("alice")
	pr, pw := io.Pipe()
	var want []byte
	go func() {
		for i := range 10 { // 3 s in all, 0.3 s between chunks
			chunk := bytes.Repeat([]byte{byte('a' + i)}, 100)
			want = append(want, chunk...)
			if _, err := pw.Write(chunk); err != nil {
				return
			}
			time.Sleep(300 * time.Millisecond)
		}
		pw.Close()
	}()
	resp, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{Content: pr, ContentLength: -1, ContentType: "text/plain"})
	if err != nil {
		t.Fatalf("slow upload: %v", err)
	}
	if got, err := alice.DownloadBytes(ctx, resp.ContentURI); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("slow upload downloads as %d bytes, %v; want %d", len(got), err, len(want))
	}
}

// testImage is a w×h gradient, its left half red and, with alpha, its
// left eighth transparent.
func testImage(w, h int, alpha bool) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 90, 255}
			if x < w/2 {
				c.R, c.G, c.B = 255, 0, 0
			}
			if alpha && x < w/8 {
				c.A = 0
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

func encodeImage(t *testing.T, format string, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch format {
	case "jpeg":
		err = jpeg.Encode(&buf, img, nil)
	case "png":
		err = png.Encode(&buf, img)
	case "gif":
		err = gif.Encode(&buf, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func thumbnailPath(mxc id.ContentURI) mautrix.PrefixableURLPath {
	return mautrix.ClientURLPath{"v1", "media", "thumbnail", mxc.Homeserver, mxc.FileID}
}

// Thumbnails of JPEG, PNG, GIF and WebP uploads in the sizes Element asks
// for, with the spec's headers, generated once — on SQLite and PostgreSQL.
func TestMediaThumbnails(t *testing.T) {
	webp, err := os.ReadFile("../media/testdata/photo.webp") // 400×300
	if err != nil {
		t.Fatal(err)
	}
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		uploads := map[string]id.ContentURI{
			"jpeg": upload(t, alice, encodeImage(t, "jpeg", testImage(1600, 1200, false)), "image/jpeg", "photo.jpg"),
			"png":  upload(t, alice, encodeImage(t, "png", testImage(1000, 500, true)), "image/png", "logo.png"),
			"gif":  upload(t, alice, encodeImage(t, "gif", testImage(900, 600, false)), "image/gif", ""),
			"webp": upload(t, alice, webp, "image/webp", "photo.webp"),
		}
		for _, tc := range []struct {
			input, method   string
			width, height   int
			wantW, wantH    int
			wantType, wantF string
		}{
			{"jpeg", "crop", 32, 32, 32, 32, "image/jpeg", "jpeg"},
			{"jpeg", "crop", 96, 96, 96, 96, "image/jpeg", "jpeg"},
			{"jpeg", "scale", 320, 240, 320, 240, "image/jpeg", "jpeg"},
			{"jpeg", "scale", 640, 480, 640, 480, "image/jpeg", "jpeg"},
			{"jpeg", "scale", 800, 600, 800, 600, "image/jpeg", "jpeg"},
			{"jpeg", "scale", 700, 500, 800, 600, "image/jpeg", "jpeg"}, // the next size up
			{"png", "crop", 96, 96, 96, 96, "image/jpeg", "jpeg"},       // the centre is opaque
			{"png", "scale", 320, 240, 320, 160, "image/png", "png"},    // transparency kept
			{"gif", "crop", 32, 32, 32, 32, "image/jpeg", "jpeg"},
			{"gif", "scale", 320, 240, 320, 213, "image/jpeg", "jpeg"},
			{"webp", "scale", 320, 240, 320, 240, "image/jpeg", "jpeg"},
			{"webp", "crop", 96, 96, 96, 96, "image/jpeg", "jpeg"},
			{"webp", "scale", 640, 480, 400, 300, "image/webp", "webp"}, // smaller than asked: the original
		} {
			resp, body, err := getMedia(t, bob, thumbnailPath(uploads[tc.input]),
				map[string]string{"width": fmt.Sprint(tc.width), "height": fmt.Sprint(tc.height), "method": tc.method})
			if err != nil {
				t.Fatalf("%s %s %dx%d: %v", tc.input, tc.method, tc.width, tc.height, err)
			}
			img, format, err := image.Decode(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("%s %s %dx%d: thumbnail does not decode: %v", tc.input, tc.method, tc.width, tc.height, err)
			}
			if b := img.Bounds(); b.Dx() != tc.wantW || b.Dy() != tc.wantH || format != tc.wantF {
				t.Errorf("%s %s %dx%d: %s %dx%d, want %s %dx%d", tc.input, tc.method, tc.width, tc.height,
					format, b.Dx(), b.Dy(), tc.wantF, tc.wantW, tc.wantH)
			}
			ext := map[string]string{"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}[tc.wantType]
			for header, want := range map[string]string{
				"Content-Type":            tc.wantType,
				"Content-Disposition":     `inline; filename="thumbnail.` + ext + `"`,
				"Content-Security-Policy": media.ContentSecurityPolicy,
				"X-Content-Type-Options":  "nosniff",
			} {
				if got := resp.Header.Get(header); got != want {
					t.Errorf("%s %s %dx%d: %s = %q, want %q", tc.input, tc.method, tc.width, tc.height, header, got, want)
				}
			}
		}
		// Each (source, size) was generated once; asking again, or for
		// the same size through mautrix's client, is a cache hit.
		generated := srv.HS.Media.ThumbnailsGenerated()
		for range 2 {
			resp, err := alice.DownloadThumbnail(ctx, uploads["jpeg"], 240, 320, mautrix.DownloadThumbnailExtra{Method: "scale"})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		if n := srv.HS.Media.ThumbnailsGenerated(); n != generated {
			t.Fatalf("cached thumbnails generated again: %d → %d", generated, n)
		}
	})
}

// Bad requests get the spec's errors: missing or bad parameters 400,
// content that is no image 400 M_UNKNOWN, an image too large to decode
// 413 M_TOO_LARGE, unknown media 404, pending media 504.
func TestMediaThumbnailErrors(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), func(c *config.Config) { c.Media.MaxThumbnailPixels = 500 * 500 })
	alice := srv.NewUser("alice")
	jpg := upload(t, alice, encodeImage(t, "jpeg", testImage(600, 450, false)), "image/jpeg", "") // 270000 pixels
	small := upload(t, alice, encodeImage(t, "jpeg", testImage(300, 200, false)), "image/jpeg", "")
	text := upload(t, alice, []byte("just some text"), "text/plain", "")
	for _, tc := range []struct {
		mxc    id.ContentURI
		query  map[string]string
		want   mautrix.RespError
		status int
	}{
		{small, map[string]string{"height": "32"}, mautrix.RespError{ErrCode: "M_MISSING_PARAM"}, 400},
		{small, map[string]string{"width": "32"}, mautrix.RespError{ErrCode: "M_MISSING_PARAM"}, 400},
		{small, map[string]string{"width": "-1", "height": "32"}, mautrix.MInvalidParam, 400},
		{small, map[string]string{"width": "3.5", "height": "32"}, mautrix.MInvalidParam, 400},
		{small, map[string]string{"width": "32", "height": "32", "method": "stretch"}, mautrix.MInvalidParam, 400},
		{small, map[string]string{"width": "32", "height": "32", "animated": "maybe"}, mautrix.MInvalidParam, 400},
		{text, map[string]string{"width": "32", "height": "32"}, mautrix.RespError{ErrCode: "M_UNKNOWN"}, 400},
		{jpg, map[string]string{"width": "32", "height": "32"}, mautrix.MTooLarge, 413},
		{id.ContentURI{Homeserver: srv.Config.ServerName, FileID: "nope"}, map[string]string{"width": "32", "height": "32"}, mautrix.MNotFound, 404},
	} {
		_, _, err := getMedia(t, alice, thumbnailPath(tc.mxc), tc.query)
		mustErrCode(t, err, tc.want.ErrCode, tc.status)
	}
	// Under the limit it works.
	if _, _, err := getMedia(t, alice, thumbnailPath(small), map[string]string{"width": "32", "height": "32", "method": "crop"}); err != nil {
		t.Fatal(err)
	}
}

// The legacy thumbnail endpoint follows media.legacy_unauthenticated_media.
func TestMediaLegacyThumbnail(t *testing.T) {
	png := encodeImage(t, "png", testImage(200, 200, false))
	query := map[string]string{"width": "32", "height": "32", "method": "crop"}
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	mxc := upload(t, srv.NewUser("alice"), png, "image/png", "")
	_, _, err := getMedia(t, srv.Client(), mautrix.MediaURLPath{"v3", "thumbnail", mxc.Homeserver, mxc.FileID}, query)
	mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
	_, _, err = getMedia(t, srv.Client(), thumbnailPath(mxc), query)
	mustErr(t, err, mautrix.MMissingToken, http.StatusUnauthorized)

	srv = hstest.Start(t, testdb.SQLiteURI(t), func(c *config.Config) { c.Media.LegacyUnauthenticatedMedia = true })
	mxc = upload(t, srv.NewUser("alice"), png, "image/png", "")
	resp, body, err := getMedia(t, srv.Client(), mautrix.MediaURLPath{"v3", "thumbnail", mxc.Homeserver, mxc.FileID}, query)
	if err != nil {
		t.Fatal(err)
	}
	if img, _, err := image.Decode(bytes.NewReader(body)); err != nil || img.Bounds().Dx() != 32 || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("legacy thumbnail: %v, %v", err, resp.Header)
	}
}

// media.user_quota bounds what one user uploads in all: 403 M_FORBIDDEN
// beyond it (the spec's answer for a quota), on both upload endpoints;
// refused uploads do not count.
func TestMediaQuota(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		const quota = 100 << 10
		srv := hstest.Start(t, uri, func(c *config.Config) { c.Media.UserQuota = quota })
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		upload(t, alice, bytes.Repeat([]byte("a"), 60<<10), "text/plain", "")
		upload(t, alice, bytes.Repeat([]byte("b"), 30<<10), "text/plain", "")
		_, err := alice.UploadBytes(ctx, bytes.Repeat([]byte("c"), 20<<10), "text/plain")
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		// Without a Content-Length the server finds out once it has read
		// the body.
		_, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{Content: bytes.NewReader(make([]byte, 20<<10)), ContentLength: -1, ContentType: "text/plain"})
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		// Asynchronous uploads count too.
		created, err := alice.CreateMXC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: created.ContentURI, ContentBytes: make([]byte, 20<<10), ContentType: "text/plain"})
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		// What is left still fits, exactly.
		upload(t, alice, bytes.Repeat([]byte("d"), 10<<10), "text/plain", "")
		_, err = alice.UploadBytes(ctx, []byte("e"), "text/plain")
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		// The quota is per user.
		upload(t, bob, bytes.Repeat([]byte("f"), 90<<10), "text/plain", "")
		// One upload larger than the quota.
		_, err = bob.UploadBytes(ctx, make([]byte, quota+1), "text/plain")
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
	})
}

// Asynchronous uploads: create an mxc:// URI, download it while pending
// (504 M_NOT_YET_UPLOADED, or waiting for it), upload it once, only as
// its creator — on SQLite and PostgreSQL.
func TestMediaAsyncUpload(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, func(c *config.Config) { c.Media.MaxPendingUploads = 3 })
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")

		created, err := alice.CreateMXC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mxc := created.ContentURI
		if mxc.Homeserver != srv.Config.ServerName || !mediaIDPattern.MatchString(mxc.FileID) {
			t.Fatalf("created %s", mxc)
		}
		if d := time.Until(created.UnusedExpiresAt.Time); d < 23*time.Hour || d > 25*time.Hour {
			t.Fatalf("unused_expires_at in %v, want 24h", d)
		}

		downloadPath := mautrix.ClientURLPath{"v1", "media", "download", mxc.Homeserver, mxc.FileID}
		_, _, err = getMedia(t, bob, downloadPath, map[string]string{"timeout_ms": "0"})
		mustErr(t, err, mautrix.RespError{ErrCode: "M_NOT_YET_UPLOADED"}, http.StatusGatewayTimeout)
		_, _, err = getMedia(t, bob, downloadPath, map[string]string{"timeout_ms": "300"})
		mustErr(t, err, mautrix.RespError{ErrCode: "M_NOT_YET_UPLOADED"}, http.StatusGatewayTimeout)
		_, _, err = getMedia(t, bob, thumbnailPath(mxc), map[string]string{"width": "32", "height": "32", "timeout_ms": "0"})
		mustErr(t, err, mautrix.RespError{ErrCode: "M_NOT_YET_UPLOADED"}, http.StatusGatewayTimeout)

		// A download waiting (the default 20 s) gets the content as soon
		// as it is uploaded.
		type result struct {
			body []byte
			err  error
		}
		waiting := make(chan result, 1)
		go func() {
			_, resp, err := bob.MakeFullRequestWithResp(ctx, mautrix.FullRequest{Method: http.MethodGet, URL: bob.BuildURL(downloadPath), DontReadResponse: true, MaxAttempts: 1})
			if err != nil {
				waiting <- result{err: err}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			waiting <- result{body, err}
		}()
		time.Sleep(200 * time.Millisecond)

		// Only the creator may upload.
		_, err = bob.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: mxc, ContentBytes: []byte("bob's"), ContentType: "text/plain"})
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		start := time.Now()
		if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: mxc, ContentBytes: pngBytes, ContentType: "image/png", FileName: "late.png"}); err != nil {
			t.Fatalf("upload to created URI: %v", err)
		}
		select {
		case res := <-waiting:
			if res.err != nil || !bytes.Equal(res.body, pngBytes) {
				t.Fatalf("waiting download: %v, %d bytes", res.err, len(res.body))
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("waiting download answered %v after the upload", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("waiting download not answered after the upload")
		}
		resp, err := bob.Download(ctx, mxc)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Content-Disposition") != `inline; filename="late.png"` {
			t.Errorf("Content-Disposition %q", resp.Header.Get("Content-Disposition"))
		}

		// Once only.
		_, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: mxc, ContentBytes: []byte("again"), ContentType: "text/plain"})
		mustErr(t, err, mautrix.RespError{ErrCode: "M_CANNOT_OVERWRITE_MEDIA"}, http.StatusConflict)
		_, err = bob.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: mxc, ContentBytes: []byte("again"), ContentType: "text/plain"})
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		// Not created, another server's, an ordinary upload's.
		plain := upload(t, alice, []byte("plain"), "text/plain", "")
		for _, target := range []id.ContentURI{
			{Homeserver: srv.Config.ServerName, FileID: "neverCreated"},
			{Homeserver: "example.org", FileID: mxc.FileID},
		} {
			_, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: target, ContentBytes: []byte("x"), ContentType: "text/plain"})
			mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		}
		_, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: plain, ContentBytes: []byte("x"), ContentType: "text/plain"})
		mustErr(t, err, mautrix.RespError{ErrCode: "M_CANNOT_OVERWRITE_MEDIA"}, http.StatusConflict)

		// Pending reservations are limited per user (3 here): 429
		// M_LIMIT_EXCEEDED with a retry time, until one is used.
		var pending []id.ContentURI
		for range 3 {
			c, err := alice.CreateMXC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, c.ContentURI)
		}
		_, err = alice.CreateMXC(ctx)
		mustErr(t, err, mautrix.MLimitExceeded, http.StatusTooManyRequests)
		var httpErr mautrix.HTTPError
		if errors.As(err, &httpErr) && httpErr.RespError.ExtraData["retry_after_ms"] == nil {
			t.Errorf("no retry_after_ms in %+v", httpErr.RespError)
		}
		if _, err := bob.CreateMXC(ctx); err != nil {
			t.Fatalf("another user's create: %v", err)
		}
		if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: pending[0], ContentBytes: []byte("done"), ContentType: "text/plain"}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.CreateMXC(ctx); err != nil {
			t.Fatalf("create after an upload freed a slot: %v", err)
		}

		// An expired reservation: uploads and downloads are 404, it does
		// not count against the limit, and it is pruned after a grace.
		now := time.Now()
		expired := &storage.PendingMedia{Origin: srv.Config.ServerName, MediaID: "expiredReservation", UserID: bob.UserID,
			CreatedTS: now.Add(-49 * time.Hour).UnixMilli(), ExpiresTS: now.Add(-25 * time.Hour).UnixMilli()}
		if err := srv.HS.DB.CreatePendingMedia(ctx, expired, 10, 0); err != nil {
			t.Fatal(err)
		}
		gone := id.ContentURI{Homeserver: expired.Origin, FileID: expired.MediaID}
		_, err = bob.UploadMedia(ctx, mautrix.ReqUploadMedia{MXC: gone, ContentBytes: []byte("late"), ContentType: "text/plain"})
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = bob.DownloadBytes(ctx, gone)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		if err := srv.HS.Media.PruneExpired(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.HS.DB.GetPendingMedia(ctx, expired.Origin, expired.MediaID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired reservation after pruning: %v", err)
		}
	})
}

const ogTestPage = `<!DOCTYPE html><html><head>
<title>Plain title</title>
<meta property="og:title" content="Switchboard 1.0 released">
<meta property="og:description" content="Bridges, bots &amp; a homeserver">
<meta property="og:image" content="/cover.png">
<meta property="og:site_name" content="Switchboard">
</head><body>Hello</body></html>`

// URL previews are off by default (404 M_UNRECOGNIZED, as from a server
// without them); on, internal addresses are refused however they are
// reached, and an allowed page's OpenGraph data comes back with its image
// in the repository.
func TestMediaURLPreview(t *testing.T) {
	cover := encodeImage(t, "png", testImage(64, 32, false))
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/post":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, ogTestPage)
		case "/cover.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(cover)
		default:
			http.NotFound(w, r)
		}
	}))
	defer site.Close()
	port := site.Listener.Addr().(*net.TCPAddr).Port

	t.Run("off by default", func(t *testing.T) {
		srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
		_, err := srv.NewUser("alice").GetURLPreview(ctx, site.URL+"/post")
		mustErr(t, err, mautrix.MUnrecognized, http.StatusNotFound)
	})

	t.Run("internal addresses refused", func(t *testing.T) {
		// Only 127.0.0.2 is allowed: a page there redirects to 127.0.0.1.
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Skipf("cannot listen on 127.0.0.2: %v", err)
		}
		redirector := httptest.NewUnstartedServer(http.RedirectHandler(site.URL+"/post", http.StatusFound))
		redirector.Listener = ln
		redirector.Start()
		defer redirector.Close()

		srv := hstest.Start(t, testdb.SQLiteURI(t), func(c *config.Config) {
			c.Media.URLPreview.Enabled = true
			c.Media.URLPreview.AllowedNetworks = []string{"127.0.0.2/32"}
		})
		alice := srv.NewUser("alice")
		for _, u := range []string{
			site.URL + "/post",
			fmt.Sprintf("http://localhost:%d/post", port),
			fmt.Sprintf("http://[::1]:%d/post", port),
			"http://10.0.0.1/",
			"http://169.254.169.254/latest/meta-data/",
			redirector.URL + "/",
		} {
			_, err := alice.GetURLPreview(ctx, u)
			mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
		}
		_, err = alice.GetURLPreview(ctx, "file:///etc/passwd")
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		_, _, err = getMedia(t, alice, mautrix.ClientURLPath{"v1", "media", "preview_url"}, nil)
		mustErr(t, err, mautrix.RespError{ErrCode: "M_MISSING_PARAM"}, http.StatusBadRequest)
	})

	t.Run("fetches rate-limited per user", func(t *testing.T) {
		srv := hstest.Start(t, testdb.SQLiteURI(t), func(c *config.Config) {
			c.Media.URLPreview.Enabled = true
			c.Media.URLPreview.AllowedNetworks = []string{"127.0.0.0/8"}
			c.RateLimits.URLPreview = config.Default().RateLimits.URLPreview // 20, then 1 per 2 s
		})
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
		alice.DefaultHTTPRetries = 0
		page := func(n int) string { return fmt.Sprintf("%s/post?n=%d", site.URL, n) }
		// A burst of distinct pages is fetched; the next is refused with
		// the time to wait, and nothing is fetched for it.
		n := 0
		for ; ; n++ {
			if n == 100 {
				t.Fatal("100 previews fetched without a limit")
			}
			_, err := alice.GetURLPreview(ctx, page(n))
			if err == nil {
				continue
			}
			mustErr(t, err, mautrix.MLimitExceeded, http.StatusTooManyRequests)
			var httpErr mautrix.HTTPError
			if !errors.As(err, &httpErr) || httpErr.RespError.ExtraData["retry_after_ms"] == nil {
				t.Fatalf("429 without retry_after_ms: %v", err)
			}
			break
		}
		if n < 10 || n > 30 {
			t.Fatalf("%d previews fetched before the limit, want the burst (~20)", n)
		}
		// Cached previews still answer, and other users are not limited.
		if p, err := alice.GetURLPreview(ctx, page(0)); err != nil || p.Title != "Switchboard 1.0 released" {
			t.Fatalf("cached preview after the limit: %+v, %v", p, err)
		}
		if _, err := bob.GetURLPreview(ctx, page(n)); err != nil {
			t.Fatalf("bob's preview while alice is limited: %v", err)
		}
	})

	t.Run("allowed", func(t *testing.T) {
		testdb.ForEach(t, func(t *testing.T, uri string) {
			srv := hstest.Start(t, uri, func(c *config.Config) {
				c.Media.URLPreview.Enabled = true
				c.Media.URLPreview.AllowedNetworks = []string{"127.0.0.0/8"}
			})
			alice, bob := srv.NewUser("alice"), srv.NewUser("bob")
			preview, err := alice.GetURLPreview(ctx, site.URL+"/post")
			if err != nil {
				t.Fatal(err)
			}
			if preview.Title != "Switchboard 1.0 released" || preview.Description != "Bridges, bots & a homeserver" ||
				preview.SiteName != "Switchboard" || preview.ImageType != "image/png" ||
				preview.ImageWidth != 64 || preview.ImageHeight != 32 || int(preview.ImageSize) != len(cover) {
				t.Fatalf("preview: %+v", preview)
			}
			img, err := preview.ImageURL.Parse()
			if err != nil {
				t.Fatalf("og:image %q: %v", preview.ImageURL, err)
			}
			if got, err := bob.DownloadBytes(ctx, img); err != nil || !bytes.Equal(got, cover) {
				t.Fatalf("og:image downloads as %d bytes, %v", len(got), err)
			}
			// The v3 path, with ts.
			var legacy map[string]any
			_, err = bob.MakeRequest(ctx, http.MethodGet, bob.BuildURLWithQuery(mautrix.MediaURLPath{"v3", "preview_url"},
				map[string]string{"url": site.URL + "/post", "ts": "1510610716656"}), nil, &legacy)
			if err != nil || legacy["og:title"] != "Switchboard 1.0 released" {
				t.Fatalf("v3 preview_url: %v, %v", legacy, err)
			}
			_, err = bob.GetURLPreview(ctx, site.URL+"/missing")
			mustErrCode(t, err, "M_UNKNOWN", http.StatusBadGateway)
		})
	})
}
