package irc

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// identPair keys a test lookup: our end, then the IRC server's end.
type identPair struct{ local, remote netip.AddrPort }

func mapLookup(m map[identPair]string) func(local, remote netip.AddrPort) (string, bool) {
	return func(local, remote netip.AddrPort) (string, bool) {
		ident, ok := m[identPair{local, remote}]
		return ident, ok
	}
}

func startIdentd(t *testing.T, listen string, lookup func(local, remote netip.AddrPort) (string, bool), tweak func(*Identd)) *Identd {
	t.Helper()
	d := NewIdentd(listen, lookup, zerolog.New(zerolog.NewTestWriter(t)))
	if tweak != nil {
		tweak(d)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

type identClient struct {
	net.Conn
	r *bufio.Reader
}

func dialIdentd(t *testing.T, d *Identd) *identClient {
	t.Helper()
	c, err := net.Dial("tcp", d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &identClient{c, bufio.NewReader(c)}
}

// ask sends raw (which carries its own line ending, or none) and returns
// the reply line without its CRLF.
func (c *identClient) ask(t *testing.T, raw string) string {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write %q: %v", raw, err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reply to %q: %v (got %q)", raw, err, line)
	}
	if !strings.HasSuffix(line, "\r\n") {
		t.Errorf("reply to %q does not end in CRLF: %q", raw, line)
	}
	return strings.TrimSuffix(line, "\r\n")
}

// closedByServer asserts that the server closes the connection without
// sending anything more.
func (c *identClient) closedByServer(t *testing.T) {
	t.Helper()
	b, err := c.r.ReadByte()
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("connection still open, read %q", b)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("connection not closed by the server: %v", err)
	}
}

var (
	identLocal  = netip.MustParseAddr("127.0.0.1")
	identAlice  = identPair{netip.AddrPortFrom(identLocal, 40000), netip.AddrPortFrom(identLocal, 6667)}
	identBroken = identPair{netip.AddrPortFrom(identLocal, 40001), netip.AddrPortFrom(identLocal, 6697)}
)

func TestIdentdQueries(t *testing.T) {
	d := startIdentd(t, "127.0.0.1:0", mapLookup(map[identPair]string{
		identAlice:  "alice",
		identBroken: "evil\r\n1, 2 : USERID : UNIX : root", // a bridge bug must not reach the wire
	}), nil)
	c := dialIdentd(t, d)
	// All on one connection: several queries per connection are allowed.
	for _, tc := range []struct{ query, want string }{
		{"40000, 6667\r\n", "40000, 6667 : USERID : UNIX : alice"},
		{"40000 , 6667\r\n", "40000, 6667 : USERID : UNIX : alice"},
		{" \t40000,6667 \r\n", "40000, 6667 : USERID : UNIX : alice"},
		{"40000,6667\n", "40000, 6667 : USERID : UNIX : alice"},
		{"6667, 40000\r\n", "6667, 40000 : ERROR : NO-USER"}, // ports swapped
		{"40002, 6667\r\n", "40002, 6667 : ERROR : NO-USER"},
		{"40001, 6697\r\n", "40001, 6697 : ERROR : UNKNOWN-ERROR"},
		{"0, 6667\r\n", "0, 6667 : ERROR : INVALID-PORT"},
		{"40000, 65536\r\n", "40000, 65536 : ERROR : INVALID-PORT"},
		{"40000, 99999\r\n", "40000, 99999 : ERROR : INVALID-PORT"},
		{"123456, 6667\r\n", "0, 6667 : ERROR : INVALID-PORT"},
		{"-1, 6667\r\n", "0, 6667 : ERROR : INVALID-PORT"},
		{"+40000, 6667\r\n", "0, 6667 : ERROR : INVALID-PORT"},
		{"40000 6667\r\n", "0, 0 : ERROR : INVALID-PORT"},
		{"40000, 6667, 1\r\n", "40000, 0 : ERROR : INVALID-PORT"},
		{"40000, 6667 : USERID\r\n", "40000, 0 : ERROR : INVALID-PORT"},
		{"hello\r\n", "0, 0 : ERROR : INVALID-PORT"},
		{"\r\n", "0, 0 : ERROR : INVALID-PORT"},
		{"\x00\xff,\x80\r\n", "0, 0 : ERROR : INVALID-PORT"},
		{"40000, 6667\r\n", "40000, 6667 : USERID : UNIX : alice"}, // still serving after garbage
	} {
		if got := c.ask(t, tc.query); got != tc.want {
			t.Errorf("query %q: got %q, want %q", tc.query, got, tc.want)
		}
	}
	// A last query without line ending, then the peer half-closes.
	io.WriteString(c, "40000, 6667")
	c.Conn.(*net.TCPConn).CloseWrite()
	if line, _ := c.r.ReadString('\n'); line != "40000, 6667 : USERID : UNIX : alice\r\n" {
		t.Errorf("unterminated last query: got %q", line)
	}
	c.closedByServer(t)
}

func TestIdentdTooLongLine(t *testing.T) {
	d := startIdentd(t, "127.0.0.1:0", mapLookup(map[identPair]string{identAlice: "alice"}), nil)
	c := dialIdentd(t, d)
	pad := func(n int) string { return "40000, 6667" + strings.Repeat(" ", n-len("40000, 6667\r\n")) + "\r\n" }
	if got := c.ask(t, pad(1000)); got != "40000, 6667 : USERID : UNIX : alice" {
		t.Errorf("1000-byte line: got %q", got)
	}
	io.WriteString(c, pad(1001))
	c.closedByServer(t)

	c = dialIdentd(t, d)
	io.WriteString(c, strings.Repeat("9", 100_000))
	c.closedByServer(t)
}

func TestIdentdIdleTimeout(t *testing.T) {
	d := startIdentd(t, "127.0.0.1:0", mapLookup(map[identPair]string{identAlice: "alice"}), func(d *Identd) {
		d.IdleTimeout = 200 * time.Millisecond
	})
	c := dialIdentd(t, d)
	for range 3 { // each query restarts the idle timer
		time.Sleep(100 * time.Millisecond)
		if got := c.ask(t, "40000, 6667\r\n"); got != "40000, 6667 : USERID : UNIX : alice" {
			t.Fatalf("got %q", got)
		}
	}
	start := time.Now()
	io.WriteString(c, "40000, 66") // an unfinished line is not answered
	c.closedByServer(t)
	if waited := time.Since(start); waited < 150*time.Millisecond || waited > 5*time.Second {
		t.Errorf("closed after %v, want about 200ms", waited)
	}
}

func TestIdentdStopClosesConnections(t *testing.T) {
	d := startIdentd(t, "127.0.0.1:0", mapLookup(map[identPair]string{identAlice: "alice"}), nil)
	idle := dialIdentd(t, d)
	if got := idle.ask(t, "40000, 6667\r\n"); got != "40000, 6667 : USERID : UNIX : alice" {
		t.Fatalf("got %q", got)
	}
	midLine := dialIdentd(t, d)
	io.WriteString(midLine, "40000,")

	stopped := make(chan struct{})
	go func() { d.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return with connections open (30 s idle timeout)")
	}
	idle.closedByServer(t)
	midLine.closedByServer(t)
	if c, err := net.Dial("tcp", d.Addr().String()); err == nil {
		c.Close()
		t.Error("still accepting connections after Stop")
	}
	d.Stop() // a second Stop is harmless
}

func TestIdentdConnectionCap(t *testing.T) {
	d := startIdentd(t, "127.0.0.1:0", mapLookup(map[identPair]string{identAlice: "alice"}), func(d *Identd) {
		d.MaxConns = 2
	})
	var open []*identClient
	for range 2 {
		c := dialIdentd(t, d)
		if got := c.ask(t, "40000, 6667\r\n"); got != "40000, 6667 : USERID : UNIX : alice" {
			t.Fatalf("got %q", got)
		}
		open = append(open, c)
	}
	extra := dialIdentd(t, d)
	io.WriteString(extra, "40000, 6667\r\n")
	extra.closedByServer(t)

	// Once one closes, a new connection is served again (as soon as the
	// server has seen the close).
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialIdentd(t, d)
		io.WriteString(c, "40000, 6667\r\n")
		if line, err := c.r.ReadString('\n'); err == nil {
			if line != "40000, 6667 : USERID : UNIX : alice\r\n" {
				t.Fatalf("got %q", line)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection served after one of the capped ones closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The one still open was not disturbed.
	if got := open[1].ask(t, "40000, 6667\r\n"); got != "40000, 6667 : USERID : UNIX : alice" {
		t.Errorf("got %q", got)
	}
}

// TestIdentdRealConnection looks up a real outgoing connection the way the
// bridge will: keyed on the dialed conn's LocalAddr and RemoteAddr. The
// "IRC server" listens on 127.0.0.2 and queries our identd on 127.0.0.1
// from there, so that a swap of addresses or ports shows.
func TestIdentdRealConnection(t *testing.T) {
	ircServer, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 not usable here: %v", err)
	}
	defer ircServer.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ircServer.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()

	bridgeConn, err := net.Dial("tcp", ircServer.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer bridgeConn.Close()
	serverSide := <-accepted
	if serverSide == nil {
		t.Fatal("IRC server accept failed")
	}
	defer serverSide.Close()

	ours := bridgeConn.LocalAddr().(*net.TCPAddr).AddrPort()
	theirs := bridgeConn.RemoteAddr().(*net.TCPAddr).AddrPort()
	d := startIdentd(t, "127.0.0.1:0", mapLookup(map[identPair]string{{ours, theirs}: "puppet42"}), nil)

	// What the IRC server knows of the client connection, from its side:
	// the client's port is its remote port, its own port is its local one.
	clientPort := serverSide.RemoteAddr().(*net.TCPAddr).Port
	serverPort := serverSide.LocalAddr().(*net.TCPAddr).Port
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	conn, err := dialer.Dial("tcp", d.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &identClient{conn, bufio.NewReader(conn)}
	conn.SetDeadline(time.Now().Add(10 * time.Second))

	q := func(a, b int) string { return strconv.Itoa(a) + " , " + strconv.Itoa(b) + "\r\n" }
	want := strconv.Itoa(clientPort) + ", " + strconv.Itoa(serverPort) + " : USERID : UNIX : puppet42"
	if got := c.ask(t, q(clientPort, serverPort)); got != want {
		t.Errorf("query as RFC 1413 orders it: got %q, want %q", got, want)
	}
	if got := c.ask(t, q(serverPort, clientPort)); !strings.HasSuffix(got, ": ERROR : NO-USER") {
		t.Errorf("ports swapped: got %q, want NO-USER", got)
	}

	// The same ports asked from another host (127.0.0.1, not the IRC
	// server) are about another connection.
	other := dialIdentd(t, d)
	if got := other.ask(t, q(clientPort, serverPort)); !strings.HasSuffix(got, ": ERROR : NO-USER") {
		t.Errorf("query from another host: got %q, want NO-USER", got)
	}
}

func FuzzIdentdLine(f *testing.F) {
	for _, s := range []string{
		"40000, 6667\r\n", "40000,6667", " 1 , 65535 ", "0,0", "65536, 1", "a,b", ",", "",
		"1,2,3", "\x00,\xff", "99999999999999999999, 1", "1, 2 : USERID : UNIX : x",
	} {
		f.Add(s, "alice")
	}
	f.Add("1, 2", "a:b\r\nc")
	f.Fuzz(func(t *testing.T, line, ident string) {
		d := NewIdentd("", func(local, remote netip.AddrPort) (string, bool) {
			if !local.IsValid() || !remote.IsValid() || local.Port() == 0 || remote.Port() == 0 {
				t.Errorf("lookup(%v, %v) with an invalid address", local, remote)
			}
			return ident, ident != "nobody"
		}, zerolog.Nop())
		reply := d.reply(line, identLocal, identLocal)
		if !strings.HasSuffix(reply, "\r\n") || strings.Count(reply, "\r") != 1 || strings.Count(reply, "\n") != 1 {
			t.Fatalf("reply %q is not one CRLF-terminated line", reply)
		}
		fields := strings.Split(strings.TrimSuffix(reply, "\r\n"), " : ")
		switch {
		case len(fields) == 4 && fields[1] == "USERID":
			if fields[3] != ident || ident == "" || strings.ContainsAny(ident, "\r\n:") {
				t.Fatalf("reply %q for ident %q", reply, ident)
			}
		case len(fields) == 3 && fields[1] == "ERROR":
		default:
			t.Fatalf("reply %q is neither USERID nor ERROR", reply)
		}
		if lport, rport, ok := parseIdentQuery(line); ok && (lport < 1 || lport > 65535 || rport < 1 || rport > 65535) {
			t.Fatalf("parseIdentQuery(%q) accepted ports %d, %d", line, lport, rport)
		}
	})
}
