// Package ircx is the IRC client layer of the IRC bridge: a Conn is one
// connection to an IRC server, for a puppet (one per Matrix user) or for
// the bridge's bot. gopkg.in/irc.v3 parses and writes the messages; ircx
// owns what it leaves out: registration with IRCv3 capability negotiation
// (CAP LS 302) and SASL PLAIN, nick collision handling, keepalive,
// ISUPPORT, the state of joined channels, a flood-controlled send queue,
// message splitting, and the pacing of reconnections.
//
// The bridge holds thousands of Conns, so an idle one costs little: one
// goroutine (its reader, blocked in Read) and a 1 KiB read buffer. There
// is no writer goroutine (senders take turns and write themselves) and no
// ticker goroutine (keepalive is a runtime timer).
package ircx

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/irc.v3"

	"github.com/switchboard-im/switchboard/framework"
)

// DefaultCaps are the IRCv3 capabilities requested when Config.Caps is
// nil (each only when the server offers it; sasl only with Config.SASL).
var DefaultCaps = []string{
	"server-time", "message-tags", "echo-message", "account-tag", "labeled-response",
	"multi-prefix", "away-notify", "batch", "draft/relaymsg", "draft/message-redaction", "sasl",
}

var (
	// ErrNotConnected: the Conn has no registered connection, or it was
	// lost before the line could be written. Send wraps it together with
	// the cause of the disconnection.
	ErrNotConnected = errors.New("ircx: not connected")
	// ErrClosed is the cause of a disconnection asked for with Quit or
	// Close.
	ErrClosed = errors.New("ircx: connection closed")
	// ErrPingTimeout is the cause of a disconnection when the server
	// stopped answering.
	ErrPingTimeout = errors.New("ircx: ping timeout")
	// ErrNickUnavailable: every nick tried during registration was taken
	// or refused.
	ErrNickUnavailable = errors.New("ircx: no nick available")
	// ErrSASLUnavailable: Config.SASL is set but the server does not
	// offer SASL PLAIN (fall back to NickServ, or fail).
	ErrSASLUnavailable = errors.New("ircx: server does not offer SASL PLAIN")
	// ErrInvalidMessage: Send was given a message that cannot be written
	// as one IRC line.
	ErrInvalidMessage = errors.New("ircx: invalid message")
	// ErrLineTooLong: the line is longer than the server accepts
	// (ISupport.LineLen); split the text with SplitMessage or SendText.
	ErrLineTooLong = errors.New("ircx: line too long")
)

// SASLError is a SASL failure numeric: 902 (nick locked), 904 (wrong
// credentials), 905 (message too long), 906 (aborted), 908 (mechanism not
// offered).
type SASLError struct {
	Code    string
	Message string
}

func (e *SASLError) Error() string { return "ircx: SASL login failed: " + e.Code + " " + e.Message }

// SASLPlain are SASL PLAIN credentials.
type SASLPlain struct {
	Account  string
	Password string
}

// Config configures a Conn. Only Addr and Nick are required.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// TLS turns on TLS, verifying the server's certificate for
	// TLSServerName ("" → Addr's host) unless TLSInsecure.
	TLS           bool
	TLSServerName string
	TLSInsecure   bool

	// Password is the server password (PASS), when not "".
	Password string
	// Nick is the nick wanted. When it is taken (433, 437) or refused
	// (432) during registration, Nick_, Nick__, Nick1, Nick2… are tried,
	// up to MaxNickAttempts alternatives (0: 10); after a 432 the
	// alternatives are also shortened, in case length was the reason.
	// Conn.Nick tells the nick finally used.
	Nick            string
	MaxNickAttempts int
	// Ident is USER's username ("" → Nick) and Realname its real name
	// ("" → Nick).
	Ident    string
	Realname string

	// Caps are the capabilities wanted (nil: DefaultCaps); those the
	// server offers are requested.
	Caps []string
	// SASL, when set, logs in with SASL PLAIN during registration.
	// Connect then fails with ErrSASLUnavailable when the server offers
	// no SASL PLAIN, and with a *SASLError when it refuses the login.
	SASL *SASLPlain

	// DialTimeout bounds the TCP connection and TLS handshake (0: 30 s),
	// RegisterTimeout the registration after it (0: 60 s), and
	// WriteTimeout every write (0: 30 s). Connect's context bounds all.
	DialTimeout     time.Duration
	RegisterTimeout time.Duration
	WriteTimeout    time.Duration
	// After PingInterval without any line from the server (0: 60 s) the
	// Conn sends a PING; when nothing comes back within PingTimeout (0:
	// 30 s), the connection is dropped with ErrPingTimeout.
	PingInterval time.Duration
	PingTimeout  time.Duration

	// SendRate is how many lines a second Send writes once SendBurst
	// lines went out at once (0: 2, one line every 500 ms, after a burst
	// of 0: 5). A negative SendRate turns flood control off.
	SendRate  float64
	SendBurst int

	// NoMembers skips member lists (NAMES, other users' JOIN, PART…):
	// for puppets, when the bot's connection keeps them. Topic and modes
	// of joined channels are still tracked.
	NoMembers bool

	// OnDial, when set, is called with the two ends of each new TCP
	// connection before registration starts (for an ident server, which
	// the IRC server asks during registration).
	OnDial func(c *Conn, local, remote net.Addr)

	// Dialer, shared by the Conns of one network, paces new connections.
	// nil: no pacing.
	Dialer *Dialer
	// BackoffMin and BackoffMax configure Conn.Backoff (0: 2 s, 5 min).
	BackoffMin, BackoffMax time.Duration

	// OnEvent is called for every message read once the server accepted
	// the registration (001 and on), in order, after the Conn's state
	// (nick, channels, ISUPPORT) took it into account. It runs on the
	// connection's reader (or, until Connect returns, on Connect's
	// goroutine): return quickly and do not call Send from it — hand the
	// work to another goroutine — or PINGs go unanswered.
	OnEvent func(c *Conn, ev *Event)
	// OnDisconnect is called once when a registered connection ends, with
	// the cause (ErrClosed after Quit or Close, ErrPingTimeout, a read or
	// write error, or the server's ERROR). It may call Connect.
	OnDisconnect func(c *Conn, err error)
}

// Event is a message from the server.
type Event struct {
	*irc.Message
	// Time is the server-time tag when the server sent one (ServerTime),
	// else when the line was read.
	Time       time.Time
	ServerTime bool
	// Channels, for QUIT and NICK, are the joined channels the user was
	// in (before the change): where to show the quit or the nick change.
	// Empty with Config.NoMembers.
	Channels []string
}

const (
	readBufSize = 1024        // most lines fit; longer ones are gathered
	maxLineSize = 16 << 10    // 8191 bytes of tags + 512 of message, with room
	stableAfter = time.Minute // a connection that lasted this long resets the backoff
	quitWait    = 5 * time.Second
)

// Conn is a connection to an IRC server that can be connected again after
// it drops. Its methods are safe for concurrent use. State (nick,
// channels, ISUPPORT, capabilities) is that of the current connection and
// starts over with each Connect.
type Conn struct {
	cfg     Config
	limiter *framework.Limiter
	backoff Backoff

	connectMu sync.Mutex
	cur       atomic.Pointer[session]
}

// New returns an unconnected Conn.
func New(cfg Config) *Conn {
	if cfg.Caps == nil {
		cfg.Caps = DefaultCaps
	}
	if cfg.Ident == "" {
		cfg.Ident = cfg.Nick
	}
	if cfg.Realname == "" {
		cfg.Realname = cfg.Nick
	}
	defaults := []struct {
		d   *time.Duration
		def time.Duration
	}{
		{&cfg.DialTimeout, 30 * time.Second}, {&cfg.RegisterTimeout, 60 * time.Second},
		{&cfg.WriteTimeout, 30 * time.Second}, {&cfg.PingInterval, 60 * time.Second},
		{&cfg.PingTimeout, 30 * time.Second},
	}
	for _, d := range defaults {
		if *d.d <= 0 {
			*d.d = d.def
		}
	}
	if cfg.MaxNickAttempts <= 0 {
		cfg.MaxNickAttempts = 10
	}
	switch {
	case cfg.SendRate == 0:
		cfg.SendRate = 2
	case cfg.SendRate < 0:
		cfg.SendRate = 0 // framework.Limiter: no limit
	}
	if cfg.SendBurst <= 0 {
		cfg.SendBurst = 5
	}
	return &Conn{
		cfg:     cfg,
		limiter: framework.NewLimiter(cfg.SendRate, cfg.SendBurst),
		backoff: Backoff{Min: cfg.BackoffMin, Max: cfg.BackoffMax},
	}
}

// session is one connection: what Connect starts and a disconnection
// ends. A new Connect makes a new one, so a late reader of the old one
// cannot touch the new state.
type session struct {
	c     *Conn
	nc    net.Conn
	br    *bufio.Reader
	long  []byte // a line longer than br's buffer, being gathered
	start time.Time

	lastRead atomic.Int64 // since start, ns
	pingSent atomic.Int64 // since start, ns; 0: none outstanding
	lag      atomic.Int64
	timer    *time.Timer // keepalive; set (under mu) before ready
	ready    atomic.Bool // registered: Send may write
	closing  atomic.Bool // Quit or Close asked for the end

	done     chan struct{}
	failOnce sync.Once
	err      error // why it ended; set before done is closed

	wmu sync.Mutex // one write at a time

	qmu   sync.Mutex
	queue []chan struct{} // senders waiting for their turn, in order
	busy  bool            // a sender has the turn

	mu           sync.Mutex // the state below
	nick         string
	user, host   string // as the server shows us, when learnt
	account      string // SASL account (900)
	is           *ISupport
	caps         []string          // enabled
	capValues    map[string]string // offered caps' values (CAP LS 302), by name
	channels     map[string]*channel
	serverErr    string // the server's ERROR text
	registeredAt time.Time
}

func (s *session) since() int64 { return int64(time.Since(s.start)) }

func (s *session) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// fail ends the connection with cause err (the first cause wins).
func (s *session) fail(err error) {
	s.failOnce.Do(func() {
		s.mu.Lock()
		serverErr := s.serverErr
		s.mu.Unlock()
		switch {
		case s.closing.Load():
			err = ErrClosed
		case serverErr != "" && !errors.Is(err, ErrPingTimeout):
			err = fmt.Errorf("ircx: server closed the connection: %s: %w", serverErr, err)
		}
		s.err = err
		close(s.done)
		s.nc.Close()
		s.mu.Lock() // Close may come while Connect sets the timer
		if s.timer != nil {
			s.timer.Stop()
		}
		s.mu.Unlock()
	})
}

// notSent is Send's error once the connection is gone.
func (s *session) notSent() error { return fmt.Errorf("%w: %w", ErrNotConnected, s.err) }

// Connect dials, registers and returns once the server sent its welcome,
// ISUPPORT and MOTD. It fails when the Conn is connected already; after a
// disconnection it connects again, with fresh state. ctx bounds the
// connection pacing (Config.Dialer), dialing and registration, not the
// connection's life: end that with Quit or Close.
func (c *Conn) Connect(ctx context.Context) error {
	c.connectMu.Lock()
	defer c.connectMu.Unlock()
	if s := c.cur.Load(); s != nil && !s.isDone() {
		return errors.New("ircx: already connected")
	}
	if c.cfg.Dialer != nil {
		if err := c.cfg.Dialer.Wait(ctx); err != nil {
			return fmt.Errorf("ircx: connect to %s: %w", c.cfg.Addr, err)
		}
	}
	nc, err := c.dial(ctx)
	if err != nil {
		return fmt.Errorf("ircx: connect to %s: %w", c.cfg.Addr, err)
	}
	s := &session{
		c:     c,
		nc:    nc,
		br:    bufio.NewReaderSize(nc, readBufSize),
		start: time.Now(),
		done:  make(chan struct{}),
		nick:  c.cfg.Nick,
		is:    defaultISupport,
	}
	c.cur.Store(s)
	if err := s.register(ctx); err != nil {
		s.fail(err)
		return fmt.Errorf("ircx: register on %s: %w", c.cfg.Addr, err)
	}
	s.mu.Lock()
	s.timer = time.AfterFunc(c.cfg.PingInterval, s.keepalive)
	s.mu.Unlock()
	s.ready.Store(true)
	go s.readLoop()
	return nil
}

func (c *Conn) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if c.cfg.OnDial != nil { // before TLS: servers ask ident as they accept
		c.cfg.OnDial(c, nc.LocalAddr(), nc.RemoteAddr())
	}
	if !c.cfg.TLS {
		return nc, nil
	}
	name := c.cfg.TLSServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(c.cfg.Addr)
	}
	tc := tls.Client(nc, &tls.Config{ServerName: name, InsecureSkipVerify: c.cfg.TLSInsecure}) //nolint:gosec // opt-in, for self-signed networks
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// readMessage returns the next parsable message (unparsable lines are
// skipped) and counts it as a sign of life.
func (s *session) readMessage() (*irc.Message, error) {
	for {
		frag, err := s.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull || (err == nil && s.long != nil) {
			if len(s.long)+len(frag) > maxLineSize {
				return nil, errors.New("ircx: the server sent a line longer than 16 KiB")
			}
			s.long = append(s.long, frag...)
			if err != nil {
				continue
			}
			frag, s.long = s.long, nil
		}
		if err != nil {
			return nil, err
		}
		s.lastRead.Store(s.since())
		m, perr := irc.ParseMessage(string(frag))
		if perr == nil {
			return m, nil
		}
	}
}

func (s *session) readLoop() {
	for {
		m, err := s.readMessage()
		if err != nil {
			s.fail(err)
			break
		}
		ev := s.handle(m)
		if f := s.c.cfg.OnEvent; f != nil {
			f(s.c, ev)
		}
	}
	s.mu.Lock()
	lasted := time.Since(s.registeredAt)
	s.mu.Unlock()
	if lasted >= stableAfter {
		s.c.backoff.Reset()
	}
	if f := s.c.cfg.OnDisconnect; f != nil {
		f(s.c, s.err)
	}
}

// keepalive runs on a timer: it PINGs a silent server and drops one that
// stays silent.
func (s *session) keepalive() {
	s.mu.Lock()
	timer := s.timer
	s.mu.Unlock()
	if s.isDone() || timer == nil {
		return
	}
	interval, timeout := int64(s.c.cfg.PingInterval), int64(s.c.cfg.PingTimeout)
	now, last, sent := s.since(), s.lastRead.Load(), s.pingSent.Load()
	switch {
	case sent != 0 && last < sent: // our PING is unanswered
		if now-sent >= timeout {
			s.fail(ErrPingTimeout)
			return
		}
		timer.Reset(time.Duration(sent + timeout - now))
	case now-last >= interval:
		s.pingSent.Store(now)
		// The token is our clock, so the PONG tells the lag.
		_ = s.writeLine("PING :ircx" + strconv.FormatInt(now, 10))
		timer.Reset(time.Duration(timeout))
	default:
		s.pingSent.Store(0)
		timer.Reset(time.Duration(interval - (now - last)))
	}
}

// writeLine writes one line now (the caller paces it).
func (s *session) writeLine(line string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.isDone() {
		return s.notSent()
	}
	_ = s.nc.SetWriteDeadline(time.Now().Add(s.c.cfg.WriteTimeout))
	if _, err := io.WriteString(s.nc, line+"\r\n"); err != nil {
		s.fail(fmt.Errorf("ircx: write: %w", err))
		return s.notSent()
	}
	return nil
}

// handle takes a message into account and returns it as an Event. It runs
// on the reader (or on Connect's goroutine from 001 on).
func (s *session) handle(m *irc.Message) *Event {
	ev := &Event{Message: m, Time: time.Now()}
	if v, ok := m.Tags["time"]; ok {
		if t, err := time.Parse(time.RFC3339Nano, string(v)); err == nil {
			ev.Time, ev.ServerTime = t, true
		}
	}
	switch m.Command {
	case "PING":
		_ = s.writeLine((&irc.Message{Command: "PONG", Params: m.Params}).String())
	case "PONG":
		if tok, ok := strings.CutPrefix(m.Trailing(), "ircx"); ok {
			if sent, err := strconv.ParseInt(tok, 10, 64); err == nil {
				s.lag.Store(s.since() - sent)
			}
		}
	case "ERROR":
		s.mu.Lock()
		s.serverErr = m.Trailing()
		s.mu.Unlock()
	case "CAP":
		s.capChange(m)
	case "005":
		if len(m.Params) > 2 {
			s.mu.Lock()
			s.is = ParseISupport(s.is, m.Params[1:len(m.Params)-1])
			s.mu.Unlock()
		}
	default:
		s.mu.Lock()
		s.track(ev)
		s.mu.Unlock()
	}
	return ev
}

// capChange follows capabilities after registration (cap-notify comes
// with CAP LS 302): NEW ones that are wanted are requested, DEL ones
// dropped.
func (s *session) capChange(m *irc.Message) {
	list := strings.Fields(m.Trailing())
	var req []string
	s.mu.Lock()
	switch strings.ToUpper(m.Param(1)) {
	case "ACK":
		s.caps = ackCaps(s.caps, list)
	case "DEL":
		for _, name := range list {
			s.caps = slices.DeleteFunc(s.caps, func(c string) bool { return c == name })
		}
	case "NEW":
		var want []string
		for _, tok := range list {
			name, value, _ := strings.Cut(tok, "=")
			if s.capValues == nil {
				s.capValues = map[string]string{}
			}
			s.capValues[name] = value
			if name != "sasl" && slices.Contains(s.c.cfg.Caps, name) && !slices.Contains(s.caps, name) {
				want = append(want, name)
			}
		}
		req = capReqLines(want)
	}
	s.mu.Unlock()
	for _, line := range req {
		if s.writeLine(line) != nil {
			return
		}
	}
}

// ackCaps applies a CAP ACK list ("-name" disables) to enabled.
func ackCaps(enabled, list []string) []string {
	for _, name := range list {
		name = strings.TrimLeft(name, "~=") // 3.1 modifiers
		if off, ok := strings.CutPrefix(name, "-"); ok {
			enabled = slices.DeleteFunc(enabled, func(c string) bool { return c == off })
		} else if !slices.Contains(enabled, name) {
			enabled = append(enabled, name)
		}
	}
	return enabled
}

// capReqLines requests caps in as few CAP REQ lines as fit in 512 bytes.
func capReqLines(caps []string) []string {
	var lines []string
	var b strings.Builder
	for _, name := range caps {
		if b.Len() > 0 && b.Len()+1+len(name) > 500 {
			lines = append(lines, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString("CAP REQ :")
		} else {
			b.WriteByte(' ')
		}
		b.WriteString(name)
	}
	if b.Len() > 0 {
		lines = append(lines, b.String())
	}
	return lines
}

// Quit sends QUIT with message after the lines already queued, waits for
// the server to close the connection (until ctx ends, 5 s at most) and
// closes it. The disconnection's cause is ErrClosed.
func (c *Conn) Quit(ctx context.Context, message string) error {
	s := c.cur.Load()
	if s == nil || s.isDone() {
		return nil
	}
	s.closing.Store(true)
	if !s.ready.Load() {
		s.fail(ErrClosed)
		return nil
	}
	line := (&irc.Message{Command: "QUIT", Params: []string{message}}).String()
	err := s.send(ctx, line)
	if err != nil && !s.isDone() {
		err = s.writeLine(line) // ctx ended in the queue: quit anyway
	}
	t := time.NewTimer(quitWait)
	defer t.Stop()
	select {
	case <-s.done:
	case <-ctx.Done():
	case <-t.C:
	}
	s.fail(ErrClosed)
	if err != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("ircx: quit: %w", err)
	}
	return nil
}

// Close drops the connection at once, without QUIT (see Quit). Lines
// waiting in the send queue fail with ErrNotConnected.
func (c *Conn) Close() error {
	if s := c.cur.Load(); s != nil {
		s.closing.Store(true)
		s.fail(ErrClosed)
	}
	return nil
}

// Done is closed when the current connection ends (at once when there is
// none).
func (c *Conn) Done() <-chan struct{} {
	if s := c.cur.Load(); s != nil {
		return s.done
	}
	return closedChan
}

var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// Err returns why the current connection ended, or nil while it is up.
func (c *Conn) Err() error {
	s := c.cur.Load()
	if s == nil {
		return ErrNotConnected
	}
	if !s.isDone() {
		return nil
	}
	return s.err
}

// Connected reports whether the Conn is registered and not disconnected.
func (c *Conn) Connected() bool {
	s := c.cur.Load()
	return s != nil && s.ready.Load() && !s.isDone()
}

// Backoff is the Conn's reconnection backoff (Config.BackoffMin/Max): the
// bridge sleeps Backoff().Next() before each Connect it retries. It is
// reset when a connection that lasted a minute or more ends.
func (c *Conn) Backoff() *Backoff { return &c.backoff }

// state returns the current session, or nil.
func (c *Conn) state() *session { return c.cur.Load() }

// Nick returns the connection's nick (the one registered, then as changed
// by NICK), or Config.Nick before connecting.
func (c *Conn) Nick() string {
	s := c.state()
	if s == nil {
		return c.cfg.Nick
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nick
}

// ISupport returns what the server announced in 005 (the defaults before
// that). Never nil; do not modify it.
func (c *Conn) ISupport() *ISupport {
	s := c.state()
	if s == nil {
		return defaultISupport
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.is
}

// Caps returns the capabilities enabled on the connection.
func (c *Conn) Caps() []string {
	s := c.state()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.caps)
}

// CapValue returns the value the server gave an enabled capability
// ("draft/relaymsg=/" → "/"), and whether it is enabled.
func (c *Conn) CapValue(name string) (string, bool) {
	s := c.state()
	if s == nil {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.caps, name) {
		return "", false
	}
	return s.capValues[name], true
}

// HasCap reports whether capability name is enabled.
func (c *Conn) HasCap(name string) bool { return slices.Contains(c.Caps(), name) }

// Account returns the account SASL logged in to, or "".
func (c *Conn) Account() string {
	s := c.state()
	if s == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.account
}

// SourceLen returns len("nick!user@host") as the server shows this
// connection to others, for SplitMessage: exact once learnt (from the
// welcome, our own JOIN or echoed message), else an upper estimate.
func (c *Conn) SourceLen() int {
	s := c.state()
	if s == nil {
		return len(c.cfg.Nick) + 2 + len(c.cfg.Ident) + 1 + 63
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sourceLen()
}

func (s *session) sourceLen() int {
	if s.user != "" && s.host != "" {
		return len(s.nick) + 1 + len(s.user) + 1 + len(s.host)
	}
	// "~" ident, and the longest host name.
	return len(s.nick) + 2 + len(s.c.cfg.Ident) + 1 + 63
}

// Lag returns the round trip of the last keepalive PING (0 before one).
func (c *Conn) Lag() time.Duration {
	if s := c.state(); s != nil {
		return time.Duration(s.lag.Load())
	}
	return 0
}
