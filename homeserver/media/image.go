package media

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // registers the GIF decoder with package image
	"image/jpeg"
	"image/png"
	"io"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers the WebP decoder with package image
)

// Image inspection and transformation for thumbnails. Uploaded images are
// hostile input: their headers are read first (image.DecodeConfig and the
// small scanners below, which never decompress pixel data) so that an
// image whose pixels would cost too much to decode is refused before any
// is decoded.

// Formats that can be thumbnailed, by the name image.DecodeConfig gives
// them, with the Content-Type an original is served with as a thumbnail.
var imageTypes = map[string]string{
	"jpeg": "image/jpeg",
	"png":  "image/png",
	"gif":  "image/gif",
	"webp": "image/webp",
}

// imageInfo is what the header of an image says.
type imageInfo struct {
	format        string // a key of imageTypes
	width, height int    // as stored, before orientation
	animated      bool
	// orientation is the EXIF orientation (1–8) of a JPEG; 1 is upright.
	orientation int
}

// transposed reports whether the orientation swaps width and height.
func (i *imageInfo) transposed() bool { return i.orientation >= 5 && i.orientation <= 8 }

// displaySize is the image's size as shown (orientation applied).
func (i *imageInfo) displaySize() (int, int) {
	if i.transposed() {
		return i.height, i.width
	}
	return i.width, i.height
}

// errNotImage is content that is not an image this package can thumbnail.
var errNotImage = errors.New("not a supported image")

// headerLimit bounds what is read for headers: an image's headers that
// are not within it are not believed.
const headerLimit = 1 << 20

// probe reads the headers of the image in rs (from its start).
func probe(rs io.ReadSeeker) (*imageInfo, error) {
	read := func(fn func(io.Reader) error) error {
		if _, err := rs.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("seek: %w", err)
		}
		return fn(bufio.NewReader(io.LimitReader(rs, headerLimit)))
	}
	var info imageInfo
	err := read(func(r io.Reader) error {
		cfg, format, err := image.DecodeConfig(r)
		if err != nil || imageTypes[format] == "" || cfg.Width <= 0 || cfg.Height <= 0 {
			return errNotImage
		}
		info = imageInfo{format: format, width: cfg.Width, height: cfg.Height, orientation: 1}
		return nil
	})
	if err != nil {
		return nil, err
	}
	switch info.format {
	case "gif":
		err = read(func(r io.Reader) error { info.animated = gifAnimated(r); return nil })
	case "png":
		err = read(func(r io.Reader) error { info.animated = pngAnimated(r); return nil })
	case "webp":
		err = read(func(r io.Reader) error { info.animated = webpAnimated(r); return nil })
	case "jpeg":
		err = read(func(r io.Reader) error { info.orientation = jpegOrientation(r); return nil })
	}
	return &info, err
}

// gifAnimated reports whether a GIF has more than one frame, by walking
// its blocks without decompressing them.
func gifAnimated(r io.Reader) bool {
	br := bufio.NewReader(r)
	var hdr [13]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return false
	}
	skip := func(n int) bool { _, err := br.Discard(n); return err == nil }
	if hdr[10]&0x80 != 0 && !skip(3<<(hdr[10]&7+1)) { // global colour table
		return false
	}
	// skipSubBlocks skips a sequence of sub-blocks up to its terminator.
	skipSubBlocks := func() bool {
		for {
			n, err := br.ReadByte()
			if err != nil {
				return false
			}
			if n == 0 {
				return true
			}
			if !skip(int(n)) {
				return false
			}
		}
	}
	frames := 0
	for {
		b, err := br.ReadByte()
		if err != nil {
			return false
		}
		switch b {
		case 0x21: // extension: label, sub-blocks
			if !skip(1) || !skipSubBlocks() {
				return false
			}
		case 0x2c: // image descriptor
			if frames++; frames > 1 {
				return true
			}
			var desc [9]byte
			if _, err := io.ReadFull(br, desc[:]); err != nil {
				return false
			}
			if desc[8]&0x80 != 0 && !skip(3<<(desc[8]&7+1)) { // local colour table
				return false
			}
			if !skip(1) || !skipSubBlocks() { // LZW minimum code size, data
				return false
			}
		default: // trailer or garbage
			return false
		}
	}
}

// pngAnimated reports whether a PNG is an APNG: an acTL chunk before the
// first IDAT.
func pngAnimated(r io.Reader) bool {
	br := bufio.NewReader(r)
	if _, err := br.Discard(8); err != nil {
		return false
	}
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return false
		}
		length := binary.BigEndian.Uint32(hdr[:4])
		switch string(hdr[4:]) {
		case "acTL":
			return true
		case "IDAT":
			return false
		}
		if length > headerLimit {
			return false
		}
		if _, err := br.Discard(int(length) + 4); err != nil { // data, CRC
			return false
		}
	}
}

// webpAnimated reports whether a WebP has the VP8X animation flag.
func webpAnimated(r io.Reader) bool {
	var hdr [21]byte // RIFF, size, WEBP, "VP8X", size, flags
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return false
	}
	return string(hdr[12:16]) == "VP8X" && hdr[20]&0x02 != 0
}

// jpegOrientation returns the EXIF orientation of a JPEG (1 if none).
func jpegOrientation(r io.Reader) int {
	br := bufio.NewReader(r)
	var soi [2]byte
	if _, err := io.ReadFull(br, soi[:]); err != nil || soi != [2]byte{0xff, 0xd8} {
		return 1
	}
	for {
		var marker [4]byte
		if _, err := io.ReadFull(br, marker[:]); err != nil || marker[0] != 0xff {
			return 1
		}
		length := int(binary.BigEndian.Uint16(marker[2:])) - 2
		if length < 0 {
			return 1
		}
		switch {
		case marker[1] == 0xe1: // APP1
			seg := make([]byte, length)
			if _, err := io.ReadFull(br, seg); err != nil {
				return 1
			}
			if bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
				return exifOrientation(seg[6:])
			}
		case marker[1] == 0xda, marker[1] == 0xd9: // start of scan, end of image
			return 1
		default:
			if _, err := br.Discard(length); err != nil {
				return 1
			}
		}
	}
}

// exifOrientation reads tag 0x0112 of IFD0 of a TIFF-structured EXIF block.
func exifOrientation(tiff []byte) int {
	if len(tiff) < 8 {
		return 1
	}
	var order binary.ByteOrder
	switch string(tiff[:2]) {
	case "II":
		order = binary.LittleEndian
	case "MM":
		order = binary.BigEndian
	default:
		return 1
	}
	ifd := int(order.Uint32(tiff[4:8]))
	if ifd < 8 || ifd+2 > len(tiff) {
		return 1
	}
	n := int(order.Uint16(tiff[ifd:]))
	for i := range n {
		e := ifd + 2 + 12*i
		if e+12 > len(tiff) {
			return 1
		}
		if order.Uint16(tiff[e:]) == 0x0112 && order.Uint16(tiff[e+2:]) == 3 { // SHORT
			if o := int(order.Uint16(tiff[e+8:])); o >= 1 && o <= 8 {
				return o
			}
			return 1
		}
	}
	return 1
}

// decodeImage decodes the (first frame of the) image in rs.
func decodeImage(rs io.ReadSeeker) (img image.Image, err error) {
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("seek: %w", err)
	}
	// The decoders are meant not to panic on bad input; if one does, this
	// upload fails rather than the request (and the flight waiting on it).
	defer func() {
		if p := recover(); p != nil {
			img, err = nil, fmt.Errorf("%w: decoder panicked: %v", errNotImage, p)
		}
	}()
	img, _, err = image.Decode(bufio.NewReader(rs))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotImage, err)
	}
	return img, nil
}

// resize scales the part src of img to w×h with Catmull-Rom (sharp, no
// aliasing when shrinking: the kernel widens with the scale factor). Large
// reductions first halve with a box filter, which costs one pass over the
// source instead of a kernel as wide as the reduction.
func resize(img image.Image, src image.Rectangle, w, h int) *image.RGBA {
	for src.Dx() >= 2*w && src.Dy() >= 2*h {
		img = halve(img, src)
		src = img.Bounds()
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.CatmullRom.Scale(dst, dst.Bounds(), img, src, draw.Src, nil)
	return dst
}

// halve returns the part r of img at half its size, each pixel the mean
// of four (premultiplied, so transparent pixels do not darken edges).
func halve(img image.Image, r image.Rectangle) *image.RGBA {
	if ycc, ok := img.(*image.YCbCr); ok && r.In(ycc.Bounds()) {
		return halveYCbCr(ycc, r) // JPEG: skip a full-size RGBA copy
	}
	src, ok := img.(*image.RGBA)
	if !ok || !r.In(src.Bounds()) {
		// Convert once; the fast path below reads RGBA.
		conv := image.NewRGBA(image.Rect(0, 0, r.Dx(), r.Dy()))
		draw.Draw(conv, conv.Bounds(), img, r.Min, draw.Src)
		src, r = conv, conv.Bounds()
	}
	w, h := r.Dx()/2, r.Dy()/2
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		row0 := src.Pix[src.PixOffset(r.Min.X, r.Min.Y+2*y):]
		row1 := src.Pix[src.PixOffset(r.Min.X, r.Min.Y+2*y+1):]
		out := dst.Pix[dst.PixOffset(0, y):]
		for x := range w {
			i := 8 * x
			for c := range 4 {
				sum := uint32(row0[i+c]) + uint32(row0[i+4+c]) + uint32(row1[i+c]) + uint32(row1[i+4+c])
				out[4*x+c] = uint8((sum + 2) / 4)
			}
		}
	}
	return dst
}

// halveYCbCr is halve for a decoded JPEG: each output pixel converts the
// mean luma and chroma of its four source pixels.
func halveYCbCr(src *image.YCbCr, r image.Rectangle) *image.RGBA {
	w, h := r.Dx()/2, r.Dy()/2
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	// 4:2:0 (most JPEGs) on an even grid: one chroma sample per 2×2 block.
	aligned420 := src.SubsampleRatio == image.YCbCrSubsampleRatio420 &&
		(r.Min.X-src.Rect.Min.X)%2 == 0 && (r.Min.Y-src.Rect.Min.Y)%2 == 0
	for y := range h {
		sy := r.Min.Y + 2*y
		row0 := src.Y[src.YOffset(r.Min.X, sy):]
		row1 := src.Y[src.YOffset(r.Min.X, sy+1):]
		out := dst.Pix[dst.PixOffset(0, y):]
		if aligned420 {
			cb, cr := src.Cb[src.COffset(r.Min.X, sy):], src.Cr[src.COffset(r.Min.X, sy):]
			for x := range w {
				i := 2 * x
				luma := (uint32(row0[i]) + uint32(row0[i+1]) + uint32(row1[i]) + uint32(row1[i+1]) + 2) / 4
				rr, gg, bb := color.YCbCrToRGB(uint8(luma), cb[x], cr[x])
				o := out[4*x : 4*x+4 : 4*x+4]
				o[0], o[1], o[2], o[3] = rr, gg, bb, 0xff
			}
			continue
		}
		for x := range w {
			sx := r.Min.X + 2*x
			i := 2 * x
			luma := (uint32(row0[i]) + uint32(row0[i+1]) + uint32(row1[i]) + uint32(row1[i+1]) + 2) / 4
			c00, c01 := src.COffset(sx, sy), src.COffset(sx+1, sy)
			c10, c11 := src.COffset(sx, sy+1), src.COffset(sx+1, sy+1)
			cb := (uint32(src.Cb[c00]) + uint32(src.Cb[c01]) + uint32(src.Cb[c10]) + uint32(src.Cb[c11]) + 2) / 4
			cr := (uint32(src.Cr[c00]) + uint32(src.Cr[c01]) + uint32(src.Cr[c10]) + uint32(src.Cr[c11]) + 2) / 4
			rr, gg, bb := color.YCbCrToRGB(uint8(luma), uint8(cb), uint8(cr))
			o := out[4*x : 4*x+4 : 4*x+4]
			o[0], o[1], o[2], o[3] = rr, gg, bb, 0xff
		}
	}
	return dst
}

// orient applies an EXIF orientation to img.
func orient(img *image.RGBA, orientation int) *image.RGBA {
	if orientation <= 1 || orientation > 8 {
		return img
	}
	w, h := img.Bounds().Dx(), img.Bounds().Dy()
	dw, dh := w, h
	if orientation >= 5 {
		dw, dh = h, w
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := range h {
		for x := range w {
			var dx, dy int
			switch orientation {
			case 2: // mirrored
				dx, dy = w-1-x, y
			case 3: // rotated 180°
				dx, dy = w-1-x, h-1-y
			case 4: // flipped
				dx, dy = x, h-1-y
			case 5: // transposed
				dx, dy = y, x
			case 6: // rotated 90° clockwise to display
				dx, dy = h-1-y, x
			case 7: // transversed
				dx, dy = h-1-y, w-1-x
			case 8: // rotated 90° counter-clockwise to display
				dx, dy = y, w-1-x
			}
			copy(dst.Pix[dst.PixOffset(dx, dy):][:4], img.Pix[img.PixOffset(x, y):][:4])
		}
	}
	return dst
}

// jpegQuality is the thumbnails' JPEG quality: small files, no visible
// blocking at thumbnail sizes.
const jpegQuality = 85

// encodeThumbnail encodes img as JPEG when it is opaque (photos) and as PNG
// when it has transparency, and returns the Content-Type.
func encodeThumbnail(w io.Writer, img *image.RGBA) (string, error) {
	if img.Opaque() {
		return "image/jpeg", jpeg.Encode(w, img, &jpeg.Options{Quality: jpegQuality})
	}
	return "image/png", (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(w, img)
}
