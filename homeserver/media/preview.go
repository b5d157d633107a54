package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"go.mau.fi/util/random"
	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/netguard"
)

// URL previews (GET /_matrix/client/v1/media/preview_url): the page's
// OpenGraph properties, with its og:image downloaded into the content
// repository and replaced by an mxc:// URI. Pages are fetched through the
// SSRF guard (package netguard) and cached per URL for
// media.url_preview.cache_duration.

// The previewer fetches URLs that users choose, from inside the
// homeserver's network: without a guard, a preview of http://10.0.0.5/admin
// or http://169.254.169.254/ (cloud metadata) would read internal services
// and show them to the user. Package netguard checks the address actually
// dialled, redirects included, against allowedNetworksKey.
const (
	allowedNetworksKey = "media.url_preview.allowed_networks"
	maxRedirects       = 5 // redirects a preview fetch follows
)

// URL preview errors the client API maps onto spec error codes.
var (
	ErrPreviewDisabled = errors.New("url previews are disabled")
	ErrBadPreviewURL   = errors.New("invalid url to preview")
	// ErrPreviewFetch wraps a failure to fetch the URL (connection, HTTP
	// status, timeout). A refused address is a *netguard.BlockedError.
	ErrPreviewFetch = errors.New("could not fetch url")
	// ErrPreviewTooLarge is an image URL larger than media.max_upload_size.
	ErrPreviewTooLarge = errors.New("url content too large")
)

const (
	// maxPreviewURLLength bounds the URLs previewed (they key the cache).
	maxPreviewURLLength = 2000
	// maxOGProperties and maxOGValueLength bound what a page can put in a
	// preview.
	maxOGProperties  = 64
	maxOGValueLength = 2000
	previewUserAgent = "Mozilla/5.0 (compatible; Switchboard URL preview; Matrix homeserver)"
)

type previewer struct {
	repo     *Repo
	client   *http.Client
	maxPage  int64
	cacheFor time.Duration
	flight   flight[string, []byte]
}

func newPreviewer(r *Repo, cfg config.URLPreviewConfig) (*previewer, error) {
	guard, err := netguard.New(allowedNetworksKey, cfg.AllowedNetworks)
	if err != nil {
		return nil, err
	}
	return &previewer{
		repo:     r,
		client:   guard.Client(netguard.ClientOptions{Timeout: cfg.Timeout.D(), MaxRedirects: maxRedirects}),
		maxPage:  cfg.MaxPageSize,
		cacheFor: cfg.CacheDuration.D(),
	}, nil
}

// PreviewsEnabled reports whether media.url_preview is on.
func (r *Repo) PreviewsEnabled() bool { return r.preview != nil }

// PreviewURL returns the preview JSON of rawURL, from the cache if it is
// there. Otherwise beforeFetch, when not nil, is asked first and may
// refuse the fetch with an error that PreviewURL returns (a rate limit:
// cached previews are cheap, fetching pages is not).
func (r *Repo) PreviewURL(ctx context.Context, rawURL string, beforeFetch func() error) (json.RawMessage, error) {
	p := r.preview
	if p == nil {
		return nil, ErrPreviewDisabled
	}
	u, err := parsePreviewURL(rawURL)
	if err != nil {
		return nil, err
	}
	key := u.String()
	if cached, err := r.db.GetURLPreview(ctx, key, time.Now().UnixMilli()); err == nil {
		return cached, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if beforeFetch != nil {
		if err := beforeFetch(); err != nil {
			return nil, err
		}
	}
	genCtx := context.WithoutCancel(ctx)
	return p.flight.Do(ctx, key, func() ([]byte, error) {
		og, err := p.preview(genCtx, u)
		if err != nil {
			return nil, err
		}
		data, err := json.Marshal(og)
		if err != nil {
			return nil, fmt.Errorf("encode preview: %w", err)
		}
		if p.cacheFor > 0 {
			now := time.Now()
			if err := r.db.PutURLPreview(genCtx, key, data, now.UnixMilli(), now.Add(p.cacheFor).UnixMilli()); err != nil {
				return nil, err
			}
		}
		return data, nil
	})
}

// parsePreviewURL accepts absolute http(s) URLs, without their fragment.
func parsePreviewURL(raw string) (*url.URL, error) {
	if raw == "" || len(raw) > maxPreviewURLLength {
		return nil, fmt.Errorf("%w: must be 1–%d bytes", ErrBadPreviewURL, maxPreviewURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPreviewURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: only absolute http and https URLs can be previewed", ErrBadPreviewURL)
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// get fetches u through the guarded client; the caller closes the body.
func (p *previewer) get(ctx context.Context, u string, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPreviewURL, err)
	}
	req.Header.Set("User-Agent", previewUserAgent)
	req.Header.Set("Accept", accept)
	req.Header.Set("Accept-Language", "en, *;q=0.5")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPreviewFetch, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: HTTP %d", ErrPreviewFetch, resp.StatusCode)
	}
	return resp, nil
}

// preview fetches u and builds its preview.
func (p *previewer) preview(ctx context.Context, u *url.URL) (map[string]any, error) {
	resp, err := p.get(ctx, u.String(), "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.1")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case strings.HasPrefix(mediaType, "image/"):
		// The URL is an image: the preview is the image.
		og := map[string]any{}
		if err := p.storeImage(ctx, resp.Body, og); errors.Is(err, ErrTooLarge) {
			return nil, ErrPreviewTooLarge
		} else if err != nil && !errors.Is(err, errNotImage) {
			return nil, err
		}
		return og, nil
	case mediaType == "text/html" || mediaType == "application/xhtml+xml":
		body, err := charset.NewReader(io.LimitReader(resp.Body, p.maxPage), resp.Header.Get("Content-Type"))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPreviewFetch, err)
		}
		og := parseOpenGraph(body, resp.Request.URL)
		if img, ok := og["og:image"].(string); ok {
			p.fetchImage(ctx, img, og)
		}
		return og, nil
	default:
		return map[string]any{}, nil
	}
}

// fetchImage downloads a page's og:image into the repository and puts
// its mxc:// URI and metadata into og, or drops og:image when it cannot.
func (p *previewer) fetchImage(ctx context.Context, imageURL string, og map[string]any) {
	err := func() error {
		resp, err := p.get(ctx, imageURL, "image/*")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return p.storeImage(ctx, resp.Body, og)
	}()
	if err != nil {
		for k := range og {
			if k == "og:image" || strings.HasPrefix(k, "og:image:") {
				delete(og, k)
			}
		}
	}
}

// storeImage stores body as new media if it is an image this server knows
// (with the type its bytes are, whatever the server said) and sets the
// og:image properties. Preview images belong to no user (no quota).
func (p *previewer) storeImage(ctx context.Context, body io.Reader, og map[string]any) error {
	r := p.repo
	rc, err := r.receive(body, r.maxUpload)
	if err != nil {
		return err
	}
	defer rc.discard()
	f, err := os.Open(rc.tmp)
	if err != nil {
		return fmt.Errorf("open preview image: %w", err)
	}
	info, err := probe(f)
	f.Close()
	if err != nil {
		return err
	}
	if err := rc.commit(); err != nil {
		return err
	}
	m := &storage.Media{Origin: r.serverName, MediaID: random.String(mediaIDLength), ContentHash: rc.hash,
		ContentType: imageTypes[info.format], Size: rc.size}
	if err := r.db.InsertMedia(ctx, m); err != nil {
		return err
	}
	w, h := info.displaySize()
	og["og:image"] = "mxc://" + m.Origin + "/" + m.MediaID
	og["og:image:type"] = m.ContentType
	og["og:image:width"] = w
	og["og:image:height"] = h
	og["matrix:image:size"] = m.Size
	return nil
}

// parseOpenGraph reads a page's og:* meta properties, falling back to its
// <title> and meta description for og:title and og:description, with
// og:image resolved against base (the page's final URL).
func parseOpenGraph(r io.Reader, base *url.URL) map[string]any {
	og := map[string]any{}
	var title, description strings.Builder
	inTitle, titleDone := false, false
	z := html.NewTokenizer(r)
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		switch tt {
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = !titleDone && tt == html.StartTagToken
			case "meta":
				if !hasAttr {
					continue
				}
				var key, content string
				hasContent := false
				for more := true; more; {
					var k, v []byte
					k, v, more = z.TagAttr()
					switch string(k) {
					case "property", "name":
						if key == "" || strings.HasPrefix(strings.ToLower(string(v)), "og:") {
							key = strings.ToLower(strings.TrimSpace(string(v)))
						}
					case "content":
						content, hasContent = string(v), true
					}
				}
				switch {
				case !hasContent:
				case strings.HasPrefix(key, "og:"):
					if _, seen := og[key]; !seen && len(og) < maxOGProperties {
						og[key] = cleanText(content)
					}
				case key == "description" && description.Len() == 0:
					description.WriteString(content)
				}
			}
		case html.TextToken:
			if inTitle && title.Len() < maxOGValueLength {
				title.Write(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" && inTitle {
				inTitle, titleDone = false, true
			}
		}
	}
	if _, ok := og["og:title"]; !ok {
		if t := cleanText(title.String()); t != "" {
			og["og:title"] = t
		}
	}
	if _, ok := og["og:description"]; !ok {
		if d := cleanText(description.String()); d != "" {
			og["og:description"] = d
		}
	}
	if img, ok := og["og:image"].(string); ok {
		ref, err := url.Parse(img)
		if u := base.ResolveReference(ref); err == nil && (u.Scheme == "http" || u.Scheme == "https") && img != "" {
			og["og:image"] = u.String()
		} else {
			delete(og, "og:image")
		}
	}
	return og
}

// cleanText collapses whitespace and bounds the length of a page's text.
func cleanText(s string) string {
	s = strings.Join(strings.Fields(strings.ToValidUTF8(s, "\uFFFD")), " ")
	if len(s) > maxOGValueLength {
		cut := maxOGValueLength
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
