// Package netguard keeps HTTP requests to URLs that users choose (URL
// previews, push gateways, outgoing webhooks) away from the server's own
// network (SSRF): loopback, private, link-local, CGNAT, multicast and
// other non-public addresses are refused unless an operator allows them.
//
// The check is on the address actually dialled (net.Dialer.Control runs
// after DNS resolution, for every connection attempt, those of redirects
// included), so a host name that resolves to an internal address, DNS
// rebinding between a check and the connection, and redirects to internal
// addresses are all refused alike. The clients it builds use no proxy (a
// proxy would be the address dialled).
package netguard

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// BlockedError is a connection refused because its address is not public
// and not allowed by the setting named in Setting (a config key).
type BlockedError struct {
	Addr    netip.Addr
	Setting string
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("address %s is not public and not allowed by %s", e.Addr, e.Setting)
}

// reservedPrefixes are non-public ranges that netip.Addr's predicates
// (loopback, private, link-local, multicast, unspecified) do not cover.
var reservedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this network"
		"100.64.0.0/10",   // carrier-grade NAT (shared address space)
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // TEST-NET-1
		"192.88.99.0/24",  // 6to4 relay anycast
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // TEST-NET-2
		"203.0.113.0/24",  // TEST-NET-3
		"240.0.0.0/4",     // reserved, and the broadcast address
		"::/96",           // IPv4-compatible (deprecated)
		"64:ff9b::/96",    // NAT64: would reach IPv4 addresses, internal ones included
		"64:ff9b:1::/48",  // local-use NAT64
		"100::/64",        // discard
		"2001::/23",       // IETF protocol assignments (Teredo among them)
		"2001:db8::/32",   // documentation
		"2002::/16",       // 6to4: embeds an IPv4 address
		"fec0::/10",       // site-local (deprecated)
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// publicAddr reports whether a is a public unicast address.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range reservedPrefixes {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// ParseNetwork parses one allow-list entry: a CIDR ("10.1.2.0/24") or a
// single address ("fd00::1"). An IPv4-mapped IPv6 prefix
// ("::ffff:192.168.5.0/120") becomes the IPv4 prefix it maps. Config
// validation uses it, so what it accepts is what New accepts.
func ParseNetwork(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-96))
	}
	return p.Masked(), nil
}

// Guard decides which addresses may be dialled: public ones, and those in
// its allow-list.
type Guard struct {
	allowed []netip.Prefix
	setting string
}

// New returns a guard that also allows the networks listed (see
// ParseNetwork). setting is the config key of that list, named in every
// *BlockedError so that an operator knows what would allow the address.
func New(setting string, allowed []string) (*Guard, error) {
	g := &Guard{setting: setting}
	for _, s := range allowed {
		p, err := ParseNetwork(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", setting, err)
		}
		g.allowed = append(g.allowed, p)
	}
	return g, nil
}

// Check returns a *BlockedError unless a may be dialled.
func (g *Guard) Check(a netip.Addr) error {
	a = a.Unmap().WithZone("")
	for _, p := range g.allowed {
		if p.Contains(a) {
			return nil
		}
	}
	if !publicAddr(a) {
		return &BlockedError{Addr: a, Setting: g.setting}
	}
	return nil
}

// CheckHost checks a URL's host (url.URL.Hostname) when it is an IP
// address literal; a host name passes, its addresses being checked when
// they are dialled. It lets an API refuse a URL when it is given rather
// than when it is used.
func (g *Guard) CheckHost(host string) error {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	return g.Check(a)
}

// Control is the net.Dialer.Control hook: it sees the resolved address of
// every connection before it is made.
func (g *Guard) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("refusing to dial unparseable address %q: %w", address, err)
	}
	return g.Check(ap.Addr())
}

// ErrTooManyRedirects ends a request that was redirected more than
// ClientOptions.MaxRedirects times.
var ErrTooManyRedirects = errors.New("too many redirects")

// ClientOptions are what the users of a guarded client choose.
type ClientOptions struct {
	// Timeout bounds a whole request: connection, redirects, headers and
	// body. Connecting and the TLS handshake get at most 10 s of it.
	Timeout time.Duration
	// MaxRedirects bounds redirects as net/http's default policy bounds
	// them to 10: one call makes at most MaxRedirects requests, the
	// first included; a redirect beyond them ends it with
	// ErrTooManyRedirects. Only http and https redirects are followed.
	// 0: none is, and the 3xx response is returned as it is.
	MaxRedirects int
}

// Client returns an HTTP client that connects only where g allows,
// through no proxy, with the redirects and timeout of opts.
func (g *Guard) Client(opts ClientOptions) *http.Client {
	connect := min(opts.Timeout, 10*time.Second)
	dialer := &net.Dialer{Timeout: connect, Control: g.Control}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    connect,
		ResponseHeaderTimeout:  opts.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           16,
		IdleConnTimeout:        30 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   opts.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if opts.MaxRedirects == 0 {
				return http.ErrUseLastResponse
			}
			if len(via) >= opts.MaxRedirects {
				return ErrTooManyRedirects
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %q URL", req.URL.Scheme)
			}
			return nil
		},
	}
}
