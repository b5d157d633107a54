package media

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

// The URL previewer fetches URLs that users choose, from inside the
// homeserver's network: without a guard, a preview of http://10.0.0.5/admin
// or http://169.254.169.254/ (cloud metadata) would read internal services
// and show them to the user. The guard is on the address actually dialled
// (net.Dialer.Control runs after DNS resolution, for every connection
// attempt, including those of redirects), so a host name that resolves to
// an internal address, DNS rebinding between a check and the connection,
// and redirects to internal addresses are all refused alike. No proxy is
// used (a proxy would be the address dialled).

// BlockedAddressError is a connection refused because its address is not
// public and not in media.url_preview.allowed_networks.
type BlockedAddressError struct {
	Addr netip.Addr
}

func (e *BlockedAddressError) Error() string {
	return fmt.Sprintf("address %s is not public and not in media.url_preview.allowed_networks", e.Addr)
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

// addrGuard decides which addresses the previewer may connect to.
type addrGuard struct {
	allowed []netip.Prefix
}

// newAddrGuard parses media.url_preview.allowed_networks (validated by
// config: CIDRs or single addresses).
func newAddrGuard(allowed []string) (*addrGuard, error) {
	g := &addrGuard{}
	for _, s := range allowed {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("allowed_networks: %q is not an IP address or CIDR", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-96))
		}
		g.allowed = append(g.allowed, p.Masked())
	}
	return g, nil
}

// check returns a *BlockedAddressError unless a may be dialled.
func (g *addrGuard) check(a netip.Addr) error {
	a = a.Unmap().WithZone("")
	for _, p := range g.allowed {
		if p.Contains(a) {
			return nil
		}
	}
	if !publicAddr(a) {
		return &BlockedAddressError{Addr: a}
	}
	return nil
}

// control is the net.Dialer.Control hook: it sees the resolved address of
// every connection before it is made.
func (g *addrGuard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("refusing to dial unparseable address %q: %w", address, err)
	}
	return g.check(ap.Addr())
}

// maxRedirects bounds the redirects a preview fetch follows.
const maxRedirects = 5

// errTooManyRedirects ends a fetch after maxRedirects.
var errTooManyRedirects = errors.New("too many redirects")

// newGuardedClient returns an HTTP client that connects only where g
// allows, follows at most maxRedirects http(s) redirects, and gives up
// after timeout.
func newGuardedClient(g *addrGuard, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: min(timeout, 10*time.Second), Control: g.control}
	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    min(timeout, 10*time.Second),
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           16,
		IdleConnTimeout:        30 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return errTooManyRedirects
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %q URL", req.URL.Scheme)
			}
			return nil
		},
	}
}
