package media

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/internal/netguard"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func previewRepo(t *testing.T, uri string, allowed ...string) *Repo {
	return newRepo(t, uri, func(c *config.Config) {
		c.Media.URLPreview.Enabled = true
		c.Media.URLPreview.AllowedNetworks = allowed
		c.Media.URLPreview.Timeout = config.Duration(5 * time.Second)
		c.Media.MaxUploadSize = 64 << 10
	})
}

// Loopback, private and other internal addresses are refused whether they
// are named directly, reached through DNS, or through a redirect.
func TestPreviewRefusesInternalAddresses(t *testing.T) {
	var hits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, `<html><head><title>internal admin</title></head></html>`)
	}))
	defer internal.Close()
	port := internal.Listener.Addr().(*net.TCPAddr).Port

	// An allowed server (127.0.0.2 only) that redirects to 127.0.0.1.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	redirector := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, internal.URL+"/secret", http.StatusFound)
	}))
	redirector.Listener = ln
	redirector.Start()
	defer redirector.Close()

	r := previewRepo(t, testdb.SQLiteURI(t), "127.0.0.2/32")
	for _, u := range []string{
		internal.URL,
		fmt.Sprintf("http://localhost:%d/", port),
		fmt.Sprintf("http://[::1]:%d/", port),
		"http://10.0.0.1/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[::ffff:127.0.0.1]:" + fmt.Sprint(port) + "/",
		"http://0.0.0.0:" + fmt.Sprint(port) + "/",
		redirector.URL + "/go",
	} {
		_, err := r.PreviewURL(ctx, u, nil)
		var blocked *netguard.BlockedError
		if !errors.As(err, &blocked) {
			t.Errorf("%s: %v, want a refused address", u, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the internal server was reached %d times", n)
	}
	for _, u := range []string{"ftp://example.org/", "/relative", "http://", strings.Repeat("x", 3000), "javascript:alert(1)"} {
		if _, err := r.PreviewURL(ctx, u, nil); !errors.Is(err, ErrBadPreviewURL) {
			t.Errorf("%q: %v, want ErrBadPreviewURL", u, err)
		}
	}
}

const ogPage = `<!DOCTYPE html>
<html><head>
<meta charset="iso-8859-1">
<title>Fallback title</title>
<meta property="og:title" content="  The   Switchboard
  blog ">
<meta property="og:description" content="Caf` + "\xe9" + ` bridges &amp; bots">
<meta property="og:image" content="/img/cover.png">
<meta property="og:image:width" content="9999">
<meta name="description" content="not used: og:description wins">
<meta property="og:type" content="article">
</head><body><p>Hello</p></body></html>`

// A page's OpenGraph data comes back with its image in the repository;
// the result is cached.
func TestPreviewOpenGraph(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		img := encodePNG(t, pattern(120, 60, false))
		var pages atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/post":
				pages.Add(1)
				w.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
				fmt.Fprint(w, ogPage)
			case "/plain":
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprint(w, `<html><head><title>Only a title</title><meta name="description" content="A description"></head></html>`)
			case "/img/cover.png", "/photo":
				w.Header().Set("Content-Type", "image/png")
				w.Write(img)
			case "/big":
				w.Header().Set("Content-Type", "image/png")
				w.Write(make([]byte, 65<<10))
			default:
				http.NotFound(w, r)
			}
		}))
		defer srv.Close()
		r := previewRepo(t, uri, "127.0.0.0/8")

		raw, err := r.PreviewURL(ctx, srv.URL+"/post#comments", nil)
		if err != nil {
			t.Fatal(err)
		}
		var og map[string]any
		if err := json.Unmarshal(raw, &og); err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]any{
			"og:title":          "The Switchboard blog",
			"og:description":    "Café bridges & bots",
			"og:type":           "article",
			"og:image:type":     "image/png",
			"og:image:width":    120.0,
			"og:image:height":   60.0,
			"matrix:image:size": float64(len(img)),
		} {
			if og[k] != want {
				t.Errorf("%s = %#v, want %#v", k, og[k], want)
			}
		}
		mxc, _ := og["og:image"].(string)
		if !strings.HasPrefix(mxc, "mxc://localhost/") {
			t.Fatalf("og:image = %q, want an mxc:// URI", og["og:image"])
		}
		c, err := r.Open(ctx, "localhost", strings.TrimPrefix(mxc, "mxc://localhost/"))
		if err != nil || c.ContentType != "image/png" || c.Size != int64(len(img)) {
			t.Fatalf("preview image: %+v, %v", c, err)
		}
		c.Close()

		// Cached: the page is not fetched again (with or without the
		// fragment).
		if again, err := r.PreviewURL(ctx, srv.URL+"/post", nil); err != nil || string(again) != string(raw) || pages.Load() != 1 {
			t.Fatalf("second preview: %v, %d page fetches", err, pages.Load())
		}

		raw, err = r.PreviewURL(ctx, srv.URL+"/plain", nil)
		if err != nil || !strings.Contains(string(raw), `"og:title":"Only a title"`) || !strings.Contains(string(raw), `"og:description":"A description"`) {
			t.Fatalf("page without OpenGraph: %s, %v", raw, err)
		}
		raw, err = r.PreviewURL(ctx, srv.URL+"/photo", nil)
		if err != nil || !strings.Contains(string(raw), `"og:image":"mxc://localhost/`) {
			t.Fatalf("image URL: %s, %v", raw, err)
		}
		if _, err := r.PreviewURL(ctx, srv.URL+"/big", nil); !errors.Is(err, ErrPreviewTooLarge) {
			t.Fatalf("image over max_upload_size: %v", err)
		}
		if _, err := r.PreviewURL(ctx, srv.URL+"/missing", nil); !errors.Is(err, ErrPreviewFetch) {
			t.Fatalf("404 page: %v", err)
		}
	})
}

// An og:image on a refused address is dropped; the rest of the preview
// stays.
func TestPreviewImageOnRefusedAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<meta property="og:title" content="T"><meta property="og:image" content="http://10.0.0.1/x.png"><meta property="og:image:width" content="5">`)
	}))
	defer srv.Close()
	r := previewRepo(t, testdb.SQLiteURI(t), "127.0.0.1")
	raw, err := r.PreviewURL(ctx, srv.URL, nil)
	if err != nil || string(raw) != `{"og:title":"T"}` {
		t.Fatalf("preview: %s, %v", raw, err)
	}
}
