package netguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const setting = "test.allowed_networks"

func TestCheck(t *testing.T) {
	g, err := New(setting, []string{"10.1.2.0/24", "fd00::1", "::ffff:192.168.5.0/120", "100.64.7.7"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr    string
		allowed bool
	}{
		// Public.
		{"93.184.215.14", true}, {"8.8.8.8", true}, {"2606:4700::1111", true}, {"::ffff:8.8.8.8", true},
		// Loopback, IPv4-mapped included.
		{"127.0.0.1", false}, {"127.1.2.3", false}, {"::1", false}, {"::ffff:127.0.0.1", false},
		// Private.
		{"10.0.0.1", false}, {"172.16.0.1", false}, {"172.31.255.255", false}, {"192.168.1.1", false},
		{"::ffff:10.0.0.1", false}, {"fc00::1", false}, {"fd12:3456::1", false},
		// Link-local (cloud metadata), with a zone too.
		{"169.254.169.254", false}, {"fe80::1", false}, {"fe80::1%eth0", false},
		// Unspecified and "this network".
		{"0.0.0.0", false}, {"::", false}, {"0.1.2.3", false},
		// Multicast and broadcast.
		{"224.0.0.1", false}, {"239.255.255.250", false}, {"ff02::1", false}, {"ff05::2", false}, {"255.255.255.255", false},
		// CGNAT, and just past it.
		{"100.64.0.1", false}, {"100.127.255.254", false}, {"100.128.0.1", true},
		// Reserved, benchmarking, documentation.
		{"240.0.0.1", false}, {"198.18.0.1", false}, {"192.0.2.1", false}, {"2001:db8::1", false}, {"fec0::1", false},
		// Addresses that embed IPv4 ones: NAT64, 6to4, IPv4-compatible.
		{"64:ff9b::a00:1", false}, {"64:ff9b::808:808", false}, {"64:ff9b:1::1", false}, {"2002:a00:1::", false}, {"::7f00:1", false},
		// The allow-list: a CIDR, one address, an IPv4-mapped CIDR (as
		// IPv4), one CGNAT address.
		{"10.1.2.3", true}, {"::ffff:10.1.2.3", true}, {"10.1.3.1", false},
		{"fd00::1", true}, {"fd00::2", false},
		{"192.168.5.7", true}, {"::ffff:192.168.5.7", true}, {"192.168.6.1", false},
		{"100.64.7.7", true}, {"100.64.7.8", false},
	} {
		a := netip.MustParseAddr(tc.addr)
		err := g.Check(a)
		var blocked *BlockedError
		switch {
		case tc.allowed && err != nil:
			t.Errorf("%s: %v, want allowed", tc.addr, err)
		case !tc.allowed && !errors.As(err, &blocked):
			t.Errorf("%s: %v, want a *BlockedError", tc.addr, err)
		case !tc.allowed && (blocked.Setting != setting || !strings.Contains(err.Error(), setting) || blocked.Addr != a.Unmap().WithZone("")):
			t.Errorf("%s: %#v (%v), want the address and the setting", tc.addr, blocked, err)
		}
		// Control sees the same address with a port.
		if err2 := g.Control("tcp", netip.AddrPortFrom(a.WithZone(""), 443).String(), nil); (err2 == nil) != (err == nil) {
			t.Errorf("%s: Control %v, Check %v", tc.addr, err2, err)
		}
	}
	if err := g.Control("tcp", "not an address", nil); err == nil {
		t.Error("Control accepted an unparseable address")
	}
}

func TestCheckHost(t *testing.T) {
	g, err := New(setting, nil)
	if err != nil {
		t.Fatal(err)
	}
	for host, allowed := range map[string]bool{
		"127.0.0.1": false, "::1": false, "::ffff:127.0.0.1": false, "fe80::1%eth0": false, "10.0.0.1": false,
		"8.8.8.8": true, "localhost": true, "push.example.org": true, // names are checked when dialled
	} {
		if err := g.CheckHost(host); (err == nil) != allowed {
			t.Errorf("%s: %v, want allowed=%v", host, err, allowed)
		}
	}
}

func TestParseNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3/24": "10.1.2.0/24", "fd00::1": "fd00::1/128", "192.0.2.1": "192.0.2.1/32",
		"::ffff:192.168.5.0/120": "192.168.5.0/24", "::ffff:10.0.0.1": "10.0.0.1/32", "0.0.0.0/0": "0.0.0.0/0",
	} {
		p, err := ParseNetwork(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseNetwork(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "intranet", "10.0.0.0/33", "10.0.0", "fe80::1%eth0", "::1/129"} {
		if _, err := ParseNetwork(in); err == nil {
			t.Errorf("ParseNetwork(%q) accepted", in)
		}
	}
	if _, err := New(setting, []string{"10.0.0.0/8", "intranet"}); err == nil || !strings.Contains(err.Error(), setting) {
		t.Errorf("New with a bad entry: %v, want an error naming %s", err, setting)
	}
}

// listen starts an HTTP server on addr (host:0).
func listen(t *testing.T, addr string, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// TestClient: only 127.0.0.2 is allowed; a server there is reached, and
// its redirect to 127.0.0.1 (directly, or through the name localhost) is
// refused on connection, so the server on 127.0.0.1 never sees a request.
func TestClient(t *testing.T) {
	var internalHits atomic.Int32
	internal := listen(t, "127.0.0.1:0", func(w http.ResponseWriter, _ *http.Request) {
		internalHits.Add(1)
		fmt.Fprint(w, "internal")
	})
	internalPort := internal.Listener.Addr().(*net.TCPAddr).Port
	allowed := listen(t, "127.0.0.2:0", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			fmt.Fprint(w, "ok")
		case "/to-internal":
			http.Redirect(w, r, internal.URL+"/secret", http.StatusFound)
		case "/to-localhost":
			http.Redirect(w, r, fmt.Sprintf("http://localhost:%d/secret", internalPort), http.StatusFound)
		case "/to-file":
			http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
		default: // /loop/N redirects to /loop/N+1
			var n int
			fmt.Sscanf(r.URL.Path, "/loop/%d", &n)
			http.Redirect(w, r, fmt.Sprintf("/loop/%d", n+1), http.StatusFound)
		}
	})
	g, err := New(setting, []string{"127.0.0.2/32"})
	if err != nil {
		t.Fatal(err)
	}
	c := g.Client(ClientOptions{Timeout: 5 * time.Second, MaxRedirects: 3})

	if resp, err := get(t, c, allowed.URL+"/ok"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("allowed server: %v, %v", resp, err)
	}
	for _, u := range []string{
		internal.URL + "/direct",
		fmt.Sprintf("http://localhost:%d/", internalPort),
		fmt.Sprintf("http://[::ffff:127.0.0.1]:%d/", internalPort),
		allowed.URL + "/to-internal",
		allowed.URL + "/to-localhost",
	} {
		_, err := get(t, c, u)
		var blocked *BlockedError
		if !errors.As(err, &blocked) || !strings.Contains(err.Error(), setting) {
			t.Errorf("%s: %v, want a *BlockedError naming %s", u, err, setting)
		}
	}
	if n := internalHits.Load(); n != 0 {
		t.Fatalf("the server on 127.0.0.1 got %d requests", n)
	}
	if _, err := get(t, c, allowed.URL+"/to-file"); err == nil || !strings.Contains(err.Error(), `"file"`) {
		t.Errorf("redirect to file://: %v", err)
	}
	if _, err := get(t, c, allowed.URL+"/loop/0"); !errors.Is(err, ErrTooManyRedirects) {
		t.Errorf("redirect loop: %v, want ErrTooManyRedirects", err)
	}

	// MaxRedirects 0: the redirect itself is the answer.
	noFollow := g.Client(ClientOptions{Timeout: 5 * time.Second})
	resp, err := get(t, noFollow, allowed.URL+"/to-internal")
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Errorf("without redirects: %v, %v; want the 302", resp, err)
	}

	// Allowing everything lets the client reach 127.0.0.1.
	open, err := New(setting, []string{"0.0.0.0/0", "::/0"})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := get(t, open.Client(ClientOptions{Timeout: 5 * time.Second}), internal.URL); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("allow-all: %v, %v", resp, err)
	}
}
