package framework_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// fakePNG starts like a PNG file: enough for content sniffing.
func fakePNG(fill byte) []byte {
	return append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), bytes.Repeat([]byte{fill}, 512)...)
}

// imageServer is a remote network's file host on loopback; it counts the
// requests per path.
type imageServer struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func newImageServer(t *testing.T, files map[string][]byte) *imageServer {
	s := &imageServer{hits: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		s.mu.Unlock()
		switch r.URL.Path {
		case "/labelled/avatar.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(files["a"])
		case "/unlabelled":
			// A generic type: the framework sniffs the bytes instead.
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Disposition", `attachment; filename="from-header.png"`)
			w.Write(files["a"])
		case "/b.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(files["b"])
		case "/big":
			w.Write(make([]byte, 4096)) // with a Content-Length
		case "/big-stream":
			for range 4 { // chunked: no Content-Length to refuse it by
				w.Write(make([]byte, 1024))
				w.(http.Flusher).Flush()
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *imageServer) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

// mediaApp is an appservice registered on a fresh homeserver (not
// started: the media helpers need no transactions).
func mediaApp(t *testing.T, kit *testkit.Kit, asID, dbURI string) *framework.Appservice {
	t.Helper()
	cfg := kit.FrameworkConfig(asID)
	if dbURI != "" {
		cfg.Database = dbURI
	}
	app := newApp(t, cfg, func(context.Context, *event.Event) {})
	t.Cleanup(app.Stop)
	kit.RegisterAppservice(app.Registration)
	return app
}

// Bytes uploaded as the bot or a ghost come back to Matrix users and to
// the appservice, size-limited.
func TestMediaUploadBytesAndDownload(t *testing.T) {
	kit := testkit.Start(t)
	app := mediaApp(t, kit, "mu", "")
	ctx := context.Background()
	viewer := kit.NewUser("viewer")
	data := fakePNG(1)

	ghost, err := app.EnsureGhost(ctx, app.Config.GhostID("alice"), "Alice", id.ContentURI{})
	if err != nil {
		t.Fatal(err)
	}
	for name, intent := range map[string]*appservice.IntentAPI{"bot": nil, "ghost": ghost} {
		uri, err := app.UploadBytes(ctx, intent, data, "image/png", "picture.png")
		if err != nil {
			t.Fatalf("%s: upload: %v", name, err)
		}
		if got, err := viewer.DownloadBytes(ctx, uri); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: viewer downloads %d bytes, %v", name, len(got), err)
		}
		got, contentType, err := app.Download(ctx, uri, 0)
		if err != nil || !bytes.Equal(got, data) || contentType != "image/png" {
			t.Fatalf("%s: appservice downloads %d bytes of %q, %v", name, len(got), contentType, err)
		}
		if _, _, err := app.Download(ctx, uri, int64(len(data)-1)); !errors.Is(err, framework.ErrMediaTooLarge) {
			t.Fatalf("%s: download beyond the limit: %v, want ErrMediaTooLarge", name, err)
		}
	}
	_, _, err = app.Download(ctx, id.ContentURI{Homeserver: kit.ServerName, FileID: "missing"}, 0)
	if !errors.Is(err, mautrix.MNotFound) {
		t.Fatalf("download of unknown media: %v, want M_NOT_FOUND", err)
	}
}

// A remote file is fetched within a size limit, typed (sniffed when the
// server only says "bytes"), named, and uploaded.
func TestMediaUploadFromURL(t *testing.T) {
	kit := testkit.Start(t)
	app := mediaApp(t, kit, "mf", "")
	ctx := context.Background()
	viewer := kit.NewUser("viewer")
	png := fakePNG(2)
	remote := newImageServer(t, map[string][]byte{"a": png})

	for _, tc := range []struct{ path, wantDisposition string }{
		{"/labelled/avatar.png", `inline; filename="avatar.png"`},
		{"/unlabelled", `inline; filename="from-header.png"`},
	} {
		uri, err := app.UploadFromURL(ctx, nil, remote.URL+tc.path, 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		resp, err := viewer.Download(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(body.Bytes(), png) || resp.Header.Get("Content-Type") != "image/png" ||
			resp.Header.Get("Content-Disposition") != tc.wantDisposition {
			t.Errorf("%s: served %d bytes as %q, %q", tc.path, body.Len(), resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
		}
	}

	for _, path := range []string{"/big", "/big-stream"} {
		if _, err := app.UploadFromURL(ctx, nil, remote.URL+path, 3000); !errors.Is(err, framework.ErrMediaTooLarge) {
			t.Errorf("%s with a 3000-byte limit: %v, want ErrMediaTooLarge", path, err)
		}
	}
	_, err := app.UploadFromURL(ctx, nil, remote.URL+"/missing?token=s3cret", 0)
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("missing file: %v; want HTTP 404 without the URL's query", err)
	}
	if _, err := app.UploadFromURL(ctx, nil, "file:///etc/passwd", 0); err == nil {
		t.Error("a file:// URL was fetched")
	}
}

// A ghost's avatar is fetched and uploaded once per source URL, replaced
// when the source changes, and a failing source is not fetched on every
// call — on SQLite and PostgreSQL.
func TestEnsureGhostAvatarURL(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		kit := testkit.Start(t)
		app := mediaApp(t, kit, "av", uri)
		ctx := context.Background()
		viewer := kit.NewUser("viewer")
		a, b := fakePNG(3), fakePNG(4)
		remote := newImageServer(t, map[string][]byte{"a": a, "b": b})
		ghost := app.Config.GhostID("bob")
		if _, err := app.EnsureGhost(ctx, ghost, "Bob", id.ContentURI{}); err != nil {
			t.Fatal(err)
		}
		avatar := func() []byte {
			t.Helper()
			p, err := viewer.GetProfile(ctx, ghost)
			if err != nil {
				t.Fatal(err)
			}
			if p.AvatarURL.IsEmpty() {
				return nil
			}
			data, err := viewer.DownloadBytes(ctx, p.AvatarURL)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}

		srcA := remote.URL + "/labelled/avatar.png"
		for range 3 {
			if err := app.EnsureGhostAvatarURL(ctx, ghost, srcA); err != nil {
				t.Fatal(err)
			}
		}
		if n := remote.count("/labelled/avatar.png"); n != 1 {
			t.Fatalf("the same source was fetched %d times, want once", n)
		}
		if !bytes.Equal(avatar(), a) {
			t.Fatal("the ghost's avatar is not the source image")
		}

		if err := app.EnsureGhostAvatarURL(ctx, ghost, remote.URL+"/b.png"); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(avatar(), b) {
			t.Fatal("a new source did not replace the avatar")
		}

		broken := remote.URL + "/gone.png"
		if err := app.EnsureGhostAvatarURL(ctx, ghost, broken); err == nil {
			t.Fatal("a failing source returned no error")
		}
		if err := app.EnsureGhostAvatarURL(ctx, ghost, broken); err != nil {
			t.Fatalf("a source that failed a moment ago: %v, want nil without fetching", err)
		}
		if n := remote.count("/gone.png"); n != 1 {
			t.Fatalf("a failing source was fetched %d times in a row, want once", n)
		}
		if !bytes.Equal(avatar(), b) {
			t.Fatal("a failing source changed the avatar")
		}
		// Nothing changes for an empty source; the namespace is checked.
		if err := app.EnsureGhostAvatarURL(ctx, ghost, ""); err != nil {
			t.Fatal(err)
		}
		if err := app.EnsureGhostAvatarURL(ctx, viewer.UserID, srcA); err == nil {
			t.Fatal("EnsureGhostAvatarURL accepted a user outside the ghost namespace")
		}
	})
}
