package irc

// An ident server (RFC 1413), so that IRC servers see each puppet's own
// ident instead of one shared "~switchboard" (matrix-appservice-irc has the
// same option). Off by default: it needs port 113 and the bridge's outgoing
// connections to come from the address the IRC servers query.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

const (
	// identMaxLine bounds a query line, terminator included (RFC 1413's
	// 1000 characters); a longer line closes the connection.
	identMaxLine = 1000
	// identMaxUserID is RFC 1413's bound on the user-id in a reply.
	identMaxUserID = 512
)

// Identd answers ident (RFC 1413) queries for the bridge's outgoing IRC connections.
type Identd struct {
	// IdleTimeout closes a connection that sends no complete query for
	// this long (default 30 s). MaxConns caps the connections served at
	// once; extra ones are closed at accept (default 256). Set both
	// before Start.
	IdleTimeout time.Duration
	MaxConns    int

	listen string
	lookup func(local, remote netip.AddrPort) (string, bool)
	log    zerolog.Logger

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

// NewIdentd returns an ident server that will listen on listen
// ("host:port", port 0 picks a free one).
//
// lookup is asked about one of the bridge's outgoing TCP connections, from
// the bridge's point of view. A query "<port-on-server> , <port-on-client>"
// names the server as the ident host (us) and the client as the querying
// IRC server, so: local is the address the query arrived on with the first
// port (our end of the outgoing connection), remote is the querying host's
// address with the second port (the IRC server's end, e.g. 6697). These
// match net.Conn's LocalAddr and RemoteAddr of the bridge's dialed
// connection; IPv4-mapped IPv6 addresses are unmapped first.
func NewIdentd(listen string, lookup func(local, remote netip.AddrPort) (ident string, ok bool), log zerolog.Logger) *Identd {
	return &Identd{
		IdleTimeout: 30 * time.Second,
		MaxConns:    256,
		listen:      listen,
		lookup:      lookup,
		log:         log.With().Str("component", "identd").Logger(),
		conns:       make(map[net.Conn]struct{}),
	}
}

// Start binds the listener and serves in the background until Stop.
func (d *Identd) Start() error {
	if d.ln != nil {
		return errors.New("identd already started")
	}
	ln, err := net.Listen("tcp", d.listen)
	if err != nil {
		return fmt.Errorf("identd listen: %w", err)
	}
	d.ln = ln
	d.log.Debug().Stringer("addr", ln.Addr()).Msg("Ident server listening")
	d.wg.Add(1)
	go d.acceptLoop()
	return nil
}

// Addr is the bound address; nil before Start.
func (d *Identd) Addr() net.Addr {
	if d.ln == nil {
		return nil
	}
	return d.ln.Addr()
}

// Stop closes the listener and every open connection, and waits for their
// goroutines to end.
func (d *Identd) Stop() {
	d.mu.Lock()
	d.done = true
	for c := range d.conns {
		c.Close()
	}
	d.mu.Unlock()
	if d.ln != nil {
		d.ln.Close()
	}
	d.wg.Wait()
}

func (d *Identd) acceptLoop() {
	defer d.wg.Done()
	for {
		c, err := d.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		} else if err != nil { // e.g. out of file descriptors: retry later
			d.log.Debug().Err(err).Msg("Ident accept failed")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		d.mu.Lock()
		if d.done || len(d.conns) >= d.MaxConns {
			d.mu.Unlock()
			d.log.Debug().Stringer("remote", c.RemoteAddr()).Msg("Ident connection refused: too many or stopping")
			c.Close()
			continue
		}
		d.conns[c] = struct{}{}
		d.wg.Add(1)
		d.mu.Unlock()
		go d.serve(c)
	}
}

func (d *Identd) serve(c net.Conn) {
	defer func() {
		c.Close()
		d.mu.Lock()
		delete(d.conns, c)
		d.mu.Unlock()
		d.wg.Done()
	}()
	local, remote := addrOf(c.LocalAddr()), addrOf(c.RemoteAddr())
	log := d.log.With().Stringer("remote", remote).Logger()
	r := bufio.NewReaderSize(c, identMaxLine)
	for {
		c.SetDeadline(time.Now().Add(d.IdleTimeout))
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			log.Debug().Msg("Ident query line too long, closing")
			return
		} else if err != nil && (err != io.EOF || len(line) == 0) {
			return // closed by the peer, idle timeout or Stop
		}
		reply := d.reply(string(line), local, remote)
		log.Debug().Str("reply", strings.TrimSpace(reply)).Msg("Ident query answered")
		if _, werr := c.Write([]byte(reply)); werr != nil || err != nil {
			return
		}
	}
}

// reply answers one query line (its terminator optional) asked on a
// connection from remote to local.
func (d *Identd) reply(line string, local, remote netip.Addr) string {
	lport, rport, ok := parseIdentQuery(strings.TrimRight(line, "\r\n"))
	if !ok {
		return fmt.Sprintf("%d, %d : ERROR : INVALID-PORT\r\n", lport, rport)
	}
	ident, found := d.lookup(netip.AddrPortFrom(local, uint16(lport)), netip.AddrPortFrom(remote, uint16(rport)))
	switch {
	case !found:
		return fmt.Sprintf("%d, %d : ERROR : NO-USER\r\n", lport, rport)
	case ident == "" || len(ident) > identMaxUserID || strings.ContainsAny(ident, "\r\n:\x00"):
		d.log.Debug().Int("lport", lport).Int("rport", rport).Msg("Ident refused: not a valid user-id")
		return fmt.Sprintf("%d, %d : ERROR : UNKNOWN-ERROR\r\n", lport, rport)
	}
	return fmt.Sprintf("%d, %d : USERID : UNIX : %s\r\n", lport, rport, ident)
}

// parseIdentQuery parses "<port-on-server> , <port-on-client>". The ports
// it returns are those to echo in the reply: 0 for a side that is not a
// number, the number as sent when it is out of range.
func parseIdentQuery(line string) (lport, rport int, ok bool) {
	a, b, found := strings.Cut(line, ",")
	lport, lok := parseIdentPort(a)
	rport, rok := parseIdentPort(b)
	return lport, rport, found && lok && rok
}

func parseIdentPort(s string) (int, bool) {
	s = strings.Trim(s, " \t")
	if s == "" || len(s) > 5 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= 1 && n <= 65535
}

func addrOf(a net.Addr) netip.Addr {
	ap, _ := addrPort(a)
	return ap.Addr()
}

// identTable maps the bridge's outgoing IRC connections to their idents,
// for the ident server: filled as each connection is dialled (before
// registration, when servers ask), emptied as it ends.
type identTable struct {
	mu      sync.Mutex
	byLocal map[netip.AddrPort]identEntry
	byConn  map[any]netip.AddrPort
}

type identEntry struct {
	owner  any
	remote netip.AddrPort
	ident  string
}

func newIdentTable() *identTable {
	return &identTable{byLocal: map[netip.AddrPort]identEntry{}, byConn: map[any]netip.AddrPort{}}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := tcp.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// dialed records a new connection of owner (a connection that dials
// again replaces its entry).
func (t *identTable) dialed(owner any, ident string, local, remote net.Addr) {
	l, ok1 := addrPort(local)
	r, ok2 := addrPort(remote)
	if !ok1 || !ok2 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropLocked(owner)
	if prev, ok := t.byLocal[l]; ok { // the port of a connection that ended unseen
		delete(t.byConn, prev.owner)
	}
	t.byConn[owner] = l
	t.byLocal[l] = identEntry{owner: owner, remote: r, ident: ident}
}

// forget drops owner's connection.
func (t *identTable) forget(owner any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropLocked(owner)
}

func (t *identTable) dropLocked(owner any) {
	if l, ok := t.byConn[owner]; ok {
		if t.byLocal[l].owner == owner {
			delete(t.byLocal, l)
		}
		delete(t.byConn, owner)
	}
}

// identGrace is how long a query about an unknown connection waits for
// it: the server may ask as soon as it accepts, before the dialler has
// recorded the connection.
const identGrace = time.Second

// lookup is the Identd's lookup: the remote end must match too, so that
// one server cannot learn the idents of connections to another.
func (t *identTable) lookup(local, remote netip.AddrPort) (string, bool) {
	deadline := time.Now().Add(identGrace)
	for {
		t.mu.Lock()
		e, ok := t.byLocal[local]
		t.mu.Unlock()
		if ok && e.remote == remote {
			return e.ident, true
		}
		if ok || time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
