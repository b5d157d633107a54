package media

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// BenchmarkUpload measures Repo.Upload (hash, temporary file, fsync,
// rename into the store, row insert with the quota check) on SQLite; MB/s
// is upload throughput. Each upload's bytes differ, so nothing is
// deduplicated.
//
//	go test ./homeserver/media -run '^$' -bench Upload
func BenchmarkUpload(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			r := newRepo(b, testdb.SQLiteURI(b), func(c *config.Config) { c.Media.MaxUploadSize = 32 << 20 })
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(rand.Uint32())
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				binary.LittleEndian.PutUint64(data, uint64(i))
				if _, err := r.Upload(ctx, bytes.NewReader(data), Upload{ContentType: "application/octet-stream", UserID: alice, DeclaredSize: int64(size)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// noisy adds grain to img, so that it compresses like a photo (a 12 MP
// one to a few MB of JPEG) rather than like a drawing.
func noisy(img *image.NRGBA) *image.NRGBA {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		if i%4 != 3 {
			img.Pix[i] = uint8(max(0, min(255, int(img.Pix[i])+int(rng.IntN(48))-24)))
		}
	}
	return img
}

// BenchmarkThumbnail measures generating one thumbnail (decode, crop or
// scale, encode) of inputs of each format; MB/s is of the input image.
// The 12 MP JPEG at 320x240 (a phone photo in a room) also reports its
// latency percentiles:
//
//	go test ./homeserver/media -run '^$' -bench Thumbnail -benchtime 30x
func BenchmarkThumbnail(b *testing.B) {
	for _, tc := range []struct {
		name string
		data func(testing.TB) []byte
		req  ThumbnailRequest
	}{
		{"jpeg-12MP-scale-320x240", func(t testing.TB) []byte { return encodeJPEG(t, noisy(pattern(4000, 3000, false))) },
			ThumbnailRequest{Width: 320, Height: 240, Method: "scale"}},
		{"jpeg-12MP-crop-96x96", func(t testing.TB) []byte { return encodeJPEG(t, noisy(pattern(4000, 3000, false))) },
			ThumbnailRequest{Width: 96, Height: 96, Method: "crop"}},
		{"jpeg-2MP-scale-800x600", func(t testing.TB) []byte { return encodeJPEG(t, pattern(1920, 1080, false)) },
			ThumbnailRequest{Width: 800, Height: 600, Method: "scale"}},
		{"png-alpha-2MP-scale-320x240", func(t testing.TB) []byte { return encodePNG(t, pattern(1920, 1080, true)) },
			ThumbnailRequest{Width: 320, Height: 240, Method: "scale"}},
		{"gif-2MP-crop-32x32", func(t testing.TB) []byte { return encodeGIF(t, 1920, 1080, 1) },
			ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}},
		{"webp-400x300-crop-96x96", func(t testing.TB) []byte { return readTestdata(t, "photo.webp") },
			ThumbnailRequest{Width: 96, Height: 96, Method: "crop"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			data := tc.data(b)
			src := bytes.NewReader(data)
			info, err := probe(src)
			if err != nil {
				b.Fatal(err)
			}
			plan := planThumbnail(info, tc.req, config.DefaultThumbnailSizes())
			if plan.original {
				b.Fatal("plan serves the original")
			}
			var took []time.Duration
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				if _, err := renderThumbnail(io.Discard, src, info, plan); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			pct := func(p float64) float64 {
				return float64(took[min(len(took)-1, int(p*float64(len(took))))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
}
