package clientapi_test

import (
	"bytes"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/homeserver/media"
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
	_, resp, err := cli.MakeFullRequestWithResp(ctx, mautrix.FullRequest{
		Method: http.MethodGet, URL: cli.BuildURL(path), Headers: header, DontReadResponse: true, MaxAttempts: 1,
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
		"media: {max_upload_size: 10}":             "media.max_upload_size",
		"media: {store_path: ''}":                  "media.store_path",
		"media: {legacy_unauthenticated_media: 3}": "legacy_unauthenticated_media",
	} {
		if _, err := config.Parse([]byte(yaml)); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: want an error naming %s, got %v", yaml, key, err)
		}
	}
	cfg, err := config.Parse(nil)
	if err != nil || cfg.Media.MaxUploadSize != 50<<20 || cfg.Media.LegacyUnauthenticatedMedia || cfg.Media.StorePath != "media" {
		t.Fatalf("defaults: %+v, %v", cfg.Media, err)
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
