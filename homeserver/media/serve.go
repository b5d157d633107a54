package media

import (
	"mime"
	"net/http"
	"strings"
	"time"
)

// ContentSecurityPolicy is the policy the spec recommends for served
// content: a file opened in a browser runs no script and loads nothing.
const ContentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"

// inlineTypes are the types the spec allows with Content-Disposition:
// inline ("Serving inline content"): browsers render them as what they
// claim to be, never as a page that could run script. Everything else
// (HTML, SVG, JavaScript, XML, …) is served as an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// InlineSafe reports whether content of this type may be served inline.
func InlineSafe(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	return err == nil && inlineTypes[mediaType]
}

// ContentDisposition is the Content-Disposition for content of the given
// type: inline only for InlineSafe types, with the filename (if any)
// encoded as RFC 6266 says: a quoted ASCII filename, and for any name that
// is not plain printable ASCII also filename* (RFC 8187, UTF-8), which
// browsers prefer, with '_' for the rest in the quoted fallback (quote and
// backslash included: browsers disagree on escapes in quoted strings).
func ContentDisposition(contentType, fileName string) string {
	disposition := "attachment"
	if InlineSafe(contentType) {
		disposition = "inline"
	}
	if fileName == "" {
		return disposition
	}
	var fallback strings.Builder
	plain := true
	for _, r := range fileName {
		if r >= 0x20 && r < 0x7f && r != '"' && r != '\\' {
			fallback.WriteRune(r)
		} else {
			plain = false
			fallback.WriteByte('_')
		}
	}
	out := disposition + `; filename="` + fallback.String() + `"`
	if !plain {
		out += "; filename*=UTF-8''" + encodeExtValue(fileName)
	}
	return out
}

// encodeExtValue percent-encodes s's UTF-8 bytes except RFC 8187's
// attr-char.
func encodeExtValue(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	return b.String()
}

// Serve writes c as a download response with the headers the spec asks
// for, named fileName ("" for none). http.ServeContent answers Range and
// conditional requests; the ETag is the content hash, so it is strong.
func Serve(w http.ResponseWriter, r *http.Request, c *Content, fileName string) {
	h := w.Header()
	h.Set("Content-Type", c.ContentType)
	h.Set("Content-Disposition", ContentDisposition(c.ContentType, fileName))
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", `"`+c.ContentHash+`"`)
	http.ServeContent(w, r, "", time.UnixMilli(c.CreatedTS), c.File)
}

// ServeThumbnail writes t as a thumbnail response: inline, named
// thumbnail.EXT, with the same protective headers as downloads.
func ServeThumbnail(w http.ResponseWriter, r *http.Request, t *ThumbnailContent) {
	h := w.Header()
	h.Set("Content-Type", t.ContentType)
	h.Set("Content-Disposition", ContentDisposition(t.ContentType, thumbnailFileName(t.ContentType)))
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", `"`+t.ContentHash+`"`)
	http.ServeContent(w, r, "", t.ModTime, t.File)
}
