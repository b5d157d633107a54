package ircx_test

import (
	"context"
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"gopkg.in/irc.v3"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
)

// End-to-end tests against a real ngircd (ircxtest.Start). The IRC users
// on the other side are plain irc.v3 clients (ircxtest.Dial), or Conns
// when what a Conn tracks is what is shown.

const wait = 5 * time.Second

// conn is a connected Conn with its events and disconnection.
type conn struct {
	*ircx.Conn
	events       chan *ircx.Event
	disconnected chan error
}

func connect(t *testing.T, addr, nick string, tune func(*ircx.Config)) *conn {
	t.Helper()
	c := &conn{events: make(chan *ircx.Event, 10000), disconnected: make(chan error, 10)}
	cfg := ircx.Config{
		Addr: addr, Nick: nick,
		OnEvent:      func(_ *ircx.Conn, ev *ircx.Event) { c.events <- ev },
		OnDisconnect: func(_ *ircx.Conn, err error) { c.disconnected <- err },
	}
	if tune != nil {
		tune(&cfg)
	}
	c.Conn = ircx.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect %s: %v", nick, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expect returns the next event that matches, failing after wait.
func (c *conn) expect(t *testing.T, what string, match func(*ircx.Event) bool) *ircx.Event {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case ev := <-c.events:
			if match(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s did not see %s", c.Nick(), what)
		}
	}
}

// send sends a raw line through the Conn's queue.
func (c *conn) send(t *testing.T, line string) {
	t.Helper()
	m, err := irc.ParseMessage(line)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Send(ctx, m); err != nil {
		t.Fatalf("%s: send %q: %v", c.Nick(), line, err)
	}
}

// join joins channel and waits for the NAMES reply.
func (c *conn) join(t *testing.T, channel string) {
	t.Helper()
	c.send(t, "JOIN "+channel)
	eventually(t, c.Nick()+" in "+channel, func() bool { _, ok := c.Member(channel, c.Nick()); return ok })
}

// eventually polls cond until it holds, failing after wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func cmd(command string, params ...string) func(*irc.Message) bool {
	return func(m *irc.Message) bool {
		if m.Command != command {
			return false
		}
		for i, p := range params {
			if !strings.EqualFold(m.Param(i), p) {
				return false
			}
		}
		return true
	}
}

func TestRegisterCapsISupport(t *testing.T) {
	srv := ircxtest.Start(t, nil)

	// What ngircd offers, as a plain client sees it.
	watcher := ircxtest.Dial(t, srv.Addr, "watcher")
	watcher.Send("CAP LS 302")
	offered := strings.Fields(watcher.Expect(wait, cmd("CAP")).Trailing())
	t.Logf("ngircd offers: %v", offered)
	if !slices.Contains(offered, "multi-prefix") {
		t.Errorf("ngircd does not offer multi-prefix: %v", offered)
	}

	alice := connect(t, srv.Addr, "alice", func(c *ircx.Config) { c.Ident = "aident"; c.Realname = "Alice Liddell" })
	if alice.Nick() != "alice" || !alice.Connected() {
		t.Errorf("nick %q connected %v", alice.Nick(), alice.Connected())
	}
	// Requested: the intersection of DefaultCaps with what is offered.
	var want []string
	for _, c := range offered {
		if slices.Contains(ircx.DefaultCaps, c) && c != "sasl" {
			want = append(want, c)
		}
	}
	if got := alice.Caps(); !slices.Equal(got, want) {
		t.Errorf("caps %v, want %v", got, want)
	}
	is := alice.ISupport()
	if is.CaseMapping != ircx.ASCII || is.NickLen != 30 || is.Network != srv.Network || is.PrefixModes != "qaohv" ||
		is.PrefixChars != "~&@%+" || is.ChanTypes != "#&+" || is.ChanModesA != "beI" || is.LineLen != 512 || is.Modes != 5 {
		t.Errorf("ISUPPORT %+v", is)
	}
	// The server shows alice as alice!~aident@127.0.0.1.
	if got, want := alice.SourceLen(), len("alice!~aident@127.0.0.1"); got != want {
		t.Errorf("SourceLen %d, want %d", got, want)
	}
	watcher.Sendf("WHOIS alice")
	if m := watcher.Expect(wait, cmd("311")); m.Param(2) != "~aident" || m.Trailing() != "Alice Liddell" {
		t.Errorf("WHOIS: %s", m)
	}
	// The welcome and the MOTD reached the event callback.
	alice.expect(t, "001", func(ev *ircx.Event) bool { return ev.Command == "001" })
	alice.expect(t, "376", func(ev *ircx.Event) bool { return ev.Command == "376" })
}

func TestNickCollision(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	ircxtest.Dial(t, srv.Addr, "bob")
	// ngircd's CASEMAPPING is ascii: BOB collides with bob.
	for _, want := range []string{"bob_", "bob__", "bob1", "BOB2"} {
		nick := "bob"
		if want == "BOB2" {
			nick = "BOB"
		}
		c := connect(t, srv.Addr, nick, nil)
		if c.Nick() != want {
			t.Errorf("connected as %q, want %q", c.Nick(), want)
		}
	}
	// Too long for NICKLEN=30 (432): the alternatives are shortened.
	long := strings.Repeat("x", 34)
	if c := connect(t, srv.Addr, long, nil); len(c.Nick()) > 30 || !strings.HasPrefix(c.Nick(), "xxxxxxxxxxxxxxxxxxxxxxxxxxxx") {
		t.Errorf("long nick became %q", c.Nick())
	}
	c := ircx.New(ircx.Config{Addr: srv.Addr, Nick: "bob", MaxNickAttempts: 1})
	if err := c.Connect(context.Background()); !errors.Is(err, ircx.ErrNickUnavailable) {
		t.Errorf("with one alternative: %v, want ErrNickUnavailable", err)
	}
}

func TestChannelState(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	alice := connect(t, srv.Addr, "alice", nil)
	bob := ircxtest.Dial(t, srv.Addr, "bob")

	alice.send(t, "JOIN #Room")
	eventually(t, "alice in #room as operator (NAMES)", func() bool {
		mode, prefix, ok := alice.HighestPrefix("#room", "ALICE")
		return ok && mode == 'o' && prefix == '@'
	})
	if got := alice.Channels(); !slices.Equal(got, []string{"#Room"}) {
		t.Errorf("channels %v", got)
	}
	bob.Send("JOIN #room")
	eventually(t, "bob joined", func() bool { m, ok := alice.Member("#room", "bob"); return ok && m.Modes == "" })

	alice.send(t, "MODE #room +v bob")
	eventually(t, "bob +v", func() bool { m, _ := alice.Member("#room", "bob"); return m.Modes == "v" })
	alice.send(t, "MODE #room +o bob")
	eventually(t, "bob +ov", func() bool { m, _ := alice.Member("#room", "bob"); return m.Modes == "ov" })
	if mode, prefix, _ := alice.HighestPrefix("#room", "bob"); mode != 'o' || prefix != '@' {
		t.Errorf("bob's highest prefix %c %c", mode, prefix)
	}
	alice.send(t, "MODE #room +nkl sesame 10")
	eventually(t, "+nkl", func() bool {
		ch, _ := alice.Channel("#room")
		_, n := ch.Modes['n']
		return n && ch.Modes['k'] == "sesame" && ch.Modes['l'] == "10"
	})

	alice.send(t, "TOPIC #room :Hello, world")
	bob.Expect(wait, cmd("TOPIC", "#room", "Hello, world"))
	eventually(t, "topic", func() bool {
		ch, _ := alice.Channel("#room")
		return ch.Topic == "Hello, world" && ch.TopicSetBy == "alice" && !ch.TopicSetAt.IsZero()
	})

	// carol joins late: NAMES with multi-prefix shows both of bob's
	// modes, the topic comes from 332/333 and the modes from 324.
	carol := connect(t, srv.Addr, "carol", nil)
	carol.send(t, "JOIN #room sesame")
	eventually(t, "carol's NAMES", func() bool {
		b, okb := carol.Member("#room", "bob")
		a, oka := carol.Member("#room", "alice")
		c, okc := carol.Member("#room", "carol")
		return okb && oka && okc && b.Modes == "ov" && a.Modes == "o" && c.Modes == ""
	})
	ch, _ := carol.Channel("#room")
	if ch.Topic != "Hello, world" || !strings.HasPrefix(ch.TopicSetBy, "alice") || time.Since(ch.TopicSetAt) > time.Minute {
		t.Errorf("carol's topic %q by %q at %s", ch.Topic, ch.TopicSetBy, ch.TopicSetAt)
	}
	if names := memberNicks(ch); !slices.Equal(names, []string{"alice", "bob", "carol"}) {
		t.Errorf("members %v", names)
	}
	carol.send(t, "MODE #room")
	eventually(t, "324", func() bool {
		ch, _ := carol.Channel("#room")
		_, n := ch.Modes['n']
		return n && ch.Modes['k'] == "sesame" && ch.Modes['l'] == "10"
	})

	alice.send(t, "MODE #room -o+h bob bob")
	eventually(t, "bob -o+h", func() bool {
		a, _ := alice.Member("#room", "bob")
		c, _ := carol.Member("#room", "bob")
		return a.Modes == "hv" && c.Modes == "hv"
	})
	if mode, prefix, _ := carol.HighestPrefix("#room", "bob"); mode != 'h' || prefix != '%' {
		t.Errorf("bob's highest prefix after -o+h: %c %c", mode, prefix)
	}

	// NICK: the same member, renamed, modes kept.
	bob.Send("NICK robert")
	ev := alice.expect(t, "NICK", func(ev *ircx.Event) bool { return ev.Command == "NICK" })
	if ev.Prefix.Name != "bob" || ev.Param(0) != "robert" || !slices.Equal(ev.Channels, []string{"#Room"}) {
		t.Errorf("NICK event %s, channels %v", ev.Message, ev.Channels)
	}
	if m, ok := alice.Member("#room", "robert"); !ok || m.Modes != "hv" {
		t.Errorf("robert: %+v %v", m, ok)
	}
	if _, ok := alice.Member("#room", "bob"); ok {
		t.Error("bob still a member after NICK")
	}

	// KICK, seen by the kicked user, and the member list.
	alice.send(t, "KICK #room robert :behave")
	bob.Expect(wait, cmd("KICK", "#room", "robert", "behave"))
	eventually(t, "robert kicked", func() bool { _, ok := carol.Member("#room", "robert"); return !ok })

	// QUIT: the event names the channels the user was in.
	bob.Send("JOIN #room sesame")
	eventually(t, "robert back", func() bool { _, ok := alice.Member("#room", "robert"); return ok })
	bob.Send("QUIT :gone fishing")
	ev = carol.expect(t, "QUIT", func(ev *ircx.Event) bool { return ev.Command == "QUIT" })
	if ev.Prefix.Name != "robert" || !strings.Contains(ev.Trailing(), "gone fishing") || len(ev.Channels) != 1 || !strings.EqualFold(ev.Channels[0], "#room") {
		t.Errorf("QUIT event %s, channels %v", ev.Message, ev.Channels)
	}
	eventually(t, "robert gone", func() bool { _, ok := alice.Member("#room", "robert"); return !ok })

	// PART, by someone else and by us.
	carol.send(t, "PART #room :bye")
	eventually(t, "carol parted", func() bool { _, ok := alice.Member("#room", "carol"); return !ok })
	eventually(t, "carol's channel dropped", func() bool { return len(carol.Channels()) == 0 })
	if _, ok := carol.Channel("#room"); ok {
		t.Error("carol still has #room")
	}
}

func memberNicks(ch ircx.Channel) []string {
	var nicks []string
	for _, m := range ch.Members {
		nicks = append(nicks, m.Nick)
	}
	return nicks
}

func TestMessagesBothWays(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	alice := connect(t, srv.Addr, "alice", nil)
	bob := ircxtest.Dial(t, srv.Addr, "bob")
	alice.join(t, "#room")
	bob.Send("JOIN #room")
	alice.expect(t, "bob's JOIN", func(ev *ircx.Event) bool { return ev.Command == "JOIN" && ev.Prefix.Name == "bob" })

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := alice.SendText(ctx, "PRIVMSG", "#room", "hello from alice"); err != nil {
		t.Fatal(err)
	}
	if m := bob.Expect(wait, cmd("PRIVMSG", "#room")); m.Prefix.Name != "alice" || m.Trailing() != "hello from alice" {
		t.Errorf("bob got %s", m)
	}
	if err := alice.SendText(ctx, "NOTICE", "bob", "a notice"); err != nil {
		t.Fatal(err)
	}
	bob.Expect(wait, cmd("NOTICE", "bob", "a notice"))

	before := time.Now()
	bob.Send("PRIVMSG #room :hello from bob")
	ev := alice.expect(t, "bob's message", func(ev *ircx.Event) bool { return ev.Command == "PRIVMSG" })
	if ev.Prefix.Name != "bob" || ev.Prefix.User != "~bob" || ev.Param(0) != "#room" || ev.Trailing() != "hello from bob" {
		t.Errorf("alice got %s", ev.Message)
	}
	// ngircd has no server-time: the time is when it was read.
	if ev.ServerTime || ev.Time.Before(before) || time.Since(ev.Time) > wait {
		t.Errorf("event time %s (server-time %v)", ev.Time, ev.ServerTime)
	}
	bob.Send("PRIVMSG alice :psst")
	ev = alice.expect(t, "bob's private message", func(ev *ircx.Event) bool { return ev.Command == "PRIVMSG" })
	if ev.Param(0) != "alice" || ev.Trailing() != "psst" {
		t.Errorf("alice got %s", ev.Message)
	}

	// Lines that cannot be sent as they are.
	if err := alice.Send(ctx, &irc.Message{Command: "PRIVMSG", Params: []string{"#room", "two\r\nQUIT :injected"}}); !errors.Is(err, ircx.ErrInvalidMessage) {
		t.Errorf("CRLF in a parameter: %v", err)
	}
	if err := alice.Send(ctx, &irc.Message{Command: "PRIVMSG", Params: []string{"#room", strings.Repeat("x", 600)}}); !errors.Is(err, ircx.ErrLineTooLong) {
		t.Errorf("600-byte line: %v", err)
	}
}

func TestLongMessageSplit(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	alice := connect(t, srv.Addr, "alice", func(c *ircx.Config) { c.SendRate = -1 })
	bob := ircxtest.Dial(t, srv.Addr, "bob")
	alice.join(t, "#room")
	bob.Send("JOIN #room")
	alice.expect(t, "bob's JOIN", func(ev *ircx.Event) bool { return ev.Command == "JOIN" && ev.Prefix.Name == "bob" })

	// Words in several scripts, then a 1,200-byte "word" of 3- and
	// 4-byte characters, then more words.
	text := strings.Repeat("Grüße aus Köln, 日本語のテキスト 🎉 and plain ASCII words. ", 40) +
		strings.Repeat("漢字🎉", 120) + " " + strings.Repeat("ünïcödé wörds ", 50) + "end."
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := alice.SendText(ctx, "PRIVMSG", "#room", text); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	lines := 0
	for got.Len() < len(text) {
		m := bob.Expect(wait, cmd("PRIVMSG", "#room"))
		lines++
		// The line as ngircd relayed it.
		relayed := ":" + m.Prefix.String() + " PRIVMSG #room :" + m.Trailing() + "\r\n"
		if len(relayed) > 512 {
			t.Errorf("line %d: %d bytes", lines, len(relayed))
		}
		if len(relayed) < 512-40 && got.Len()+len(m.Trailing()) < len(text) {
			t.Errorf("line %d: only %d bytes of 512 used", lines, len(relayed))
		}
		if !utf8.ValidString(m.Trailing()) {
			t.Errorf("line %d is not valid UTF-8", lines)
		}
		got.WriteString(m.Trailing())
	}
	if got.String() != text {
		t.Errorf("reassembled text differs:\n got %q\nwant %q", got.String(), text)
	}
	t.Logf("%d bytes of text in %d lines", len(text), lines)

	// Newlines make separate messages.
	if err := alice.SendText(ctx, "PRIVMSG", "#room", "first line\nsecond line\r\n\nthird"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first line", "second line", "third"} {
		bob.Expect(wait, cmd("PRIVMSG", "#room", want))
	}
}

func TestFloodControl(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	// The defaults: a burst of 5, then a line every 500 ms.
	alice := connect(t, srv.Addr, "alice", nil)
	bob := ircxtest.Dial(t, srv.Addr, "bob")
	alice.join(t, "#room")
	bob.Send("JOIN #room")
	alice.expect(t, "bob's JOIN", func(ev *ircx.Event) bool { return ev.Command == "JOIN" && ev.Prefix.Name == "bob" })
	time.Sleep(600 * time.Millisecond) // the JOIN's token comes back: a full bucket

	// Nine senders, each queued behind the one before.
	const n = 9
	var sent atomic.Int32
	var maxDepth int
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		go func() {
			errs <- alice.SendText(context.Background(), "PRIVMSG", "#room", "line "+string(rune('0'+i)))
			sent.Add(1)
		}()
		eventually(t, "the sender queued", func() bool { return int(sent.Load())+alice.QueueLen() >= i+1 })
		maxDepth = max(maxDepth, alice.QueueLen())
	}
	var arrivals []time.Duration
	for i := range n {
		bob.Expect(wait, cmd("PRIVMSG", "#room", "line "+string(rune('0'+i))))
		arrivals = append(arrivals, time.Since(start))
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	t.Logf("arrivals %v, deepest queue %d", arrivals, maxDepth)
	// A full bucket at start: 5 at once, then 4 more 500 ms apart, the
	// last one 2 s after the start.
	if last := arrivals[n-1]; last < 1950*time.Millisecond || last > 3500*time.Millisecond {
		t.Errorf("9 lines took %s, want about 2 s", last)
	}
	if arrivals[4] > 400*time.Millisecond {
		t.Errorf("the burst of 5 took %s", arrivals[4])
	}
	if maxDepth < 3 {
		t.Errorf("queue depth reached only %d", maxDepth)
	}
	if alice.QueueLen() != 0 {
		t.Errorf("queue depth %d after sending", alice.QueueLen())
	}
}

func TestSendFailsWhenDisconnected(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	alice := connect(t, srv.Addr, "alice", func(c *ircx.Config) { c.SendRate, c.SendBurst = 1, 1 })
	alice.send(t, "JOIN #room") // takes the one token

	// A sender whose deadline comes before its turn gives up at once.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := alice.SendText(ctx, "PRIVMSG", "#room", "too late"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("send with a short deadline: %v", err)
	}

	errs := make(chan error, 5)
	for range 5 {
		go func() { errs <- alice.SendText(context.Background(), "PRIVMSG", "#room", "queued") }()
	}
	eventually(t, "5 queued", func() bool { return alice.QueueLen() == 5 })
	srv.Stop()
	failed := 0
	for range 5 {
		select {
		case err := <-errs:
			if errors.Is(err, ircx.ErrNotConnected) {
				failed++
			} else if err != nil {
				t.Errorf("send: %v", err)
			}
		case <-time.After(wait):
			t.Fatal("a queued send did not return after the disconnection")
		}
	}
	// At most one line went out before the server stopped.
	if failed < 4 {
		t.Errorf("%d of 5 queued sends failed, want ≥ 4", failed)
	}
	if err := <-alice.disconnected; err == nil || !strings.Contains(err.Error(), "Server going down") {
		t.Errorf("disconnection cause: %v", err)
	}
	if err := alice.SendText(context.Background(), "PRIVMSG", "#room", "after"); !errors.Is(err, ircx.ErrNotConnected) {
		t.Errorf("send after the disconnection: %v", err)
	}
	if alice.QueueLen() != 0 || alice.Connected() {
		t.Errorf("queue %d connected %v", alice.QueueLen(), alice.Connected())
	}
}

func TestPingTimeout(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	alice := connect(t, srv.Addr, "alice", func(c *ircx.Config) {
		c.PingInterval, c.PingTimeout = 300*time.Millisecond, 700*time.Millisecond
	})
	// Idle: the keepalive PINGs and measures the lag.
	eventually(t, "a keepalive round trip", func() bool { return alice.Lag() > 0 })
	time.Sleep(time.Second)
	if !alice.Connected() {
		t.Fatalf("an idle, answering connection dropped: %v", alice.Err())
	}

	srv.Pause() // connection open, nothing answered
	paused := time.Now()
	select {
	case <-alice.Done():
	case <-time.After(wait):
		t.Fatal("a frozen server went unnoticed")
	}
	took := time.Since(paused)
	if !errors.Is(alice.Err(), ircx.ErrPingTimeout) || !errors.Is(<-alice.disconnected, ircx.ErrPingTimeout) {
		t.Errorf("cause %v, want ErrPingTimeout", alice.Err())
	}
	// At most PingInterval of silence, then PingTimeout (1 s), with room
	// for a loaded machine.
	if took > 2500*time.Millisecond {
		t.Errorf("detected after %s", took)
	}
	t.Logf("lag %s; frozen server detected after %s", alice.Lag(), took)
}

func TestServerRestart(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	alice := connect(t, srv.Addr, "alice", func(c *ircx.Config) { c.BackoffMin, c.BackoffMax = 50*time.Millisecond, time.Second })
	alice.send(t, "JOIN #room")
	eventually(t, "joined", func() bool { return len(alice.Channels()) == 1 })

	srv.Stop()
	select {
	case err := <-alice.disconnected:
		t.Logf("disconnected: %v", err)
	case <-time.After(wait):
		t.Fatal("no disconnection when the server stopped")
	}
	// While the server is down, Connect fails and the backoff grows.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := alice.Connect(ctx); err == nil {
		t.Fatal("Connect succeeded with the server down")
	}
	d1, d2 := alice.Backoff().Next(), alice.Backoff().Next()
	if d1 <= 0 || d1 > 50*time.Millisecond || d2 < 50*time.Millisecond || d2 > 100*time.Millisecond {
		t.Errorf("backoff %s then %s", d1, d2)
	}

	srv.Start()
	if err := alice.Connect(ctx); err != nil {
		t.Fatalf("Connect after the restart: %v", err)
	}
	if !alice.Connected() || alice.Nick() != "alice" || len(alice.Channels()) != 0 || alice.Err() != nil {
		t.Errorf("after reconnecting: connected %v nick %q channels %v err %v", alice.Connected(), alice.Nick(), alice.Channels(), alice.Err())
	}
	if err := alice.Connect(ctx); err == nil {
		t.Error("Connect while connected succeeded")
	}
	alice.send(t, "JOIN #room")
	eventually(t, "joined again", func() bool { return len(alice.Channels()) == 1 })
}

func TestQuitSeenByOthers(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	alice := connect(t, srv.Addr, "alice", nil)
	bob := ircxtest.Dial(t, srv.Addr, "bob")
	alice.join(t, "#room")
	bob.Send("JOIN #room")
	alice.expect(t, "bob's JOIN", func(ev *ircx.Event) bool { return ev.Command == "JOIN" && ev.Prefix.Name == "bob" })

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := alice.Quit(ctx, "see you later"); err != nil {
		t.Fatal(err)
	}
	m := bob.Expect(wait, cmd("QUIT"))
	if m.Prefix.Name != "alice" || !strings.Contains(m.Trailing(), "see you later") {
		t.Errorf("bob saw %s", m)
	}
	if err := <-alice.disconnected; !errors.Is(err, ircx.ErrClosed) {
		t.Errorf("disconnection cause %v, want ErrClosed", err)
	}
	if alice.Connected() || !errors.Is(alice.Err(), ircx.ErrClosed) {
		t.Errorf("after Quit: connected %v err %v", alice.Connected(), alice.Err())
	}
	// Close drops at once; bob sees a QUIT without our message.
	carol := connect(t, srv.Addr, "carol", nil)
	carol.join(t, "#room")
	bob.Expect(wait, cmd("JOIN", "#room"))
	carol.Close()
	if m := bob.Expect(wait, cmd("QUIT")); m.Prefix.Name != "carol" {
		t.Errorf("bob saw %s", m)
	}
}

func TestDialerPacesConnections(t *testing.T) {
	srv := ircxtest.Start(t, nil)
	dialer := ircx.NewDialer(10, 2) // 10 a second after 2 at once
	const n = 6
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := ircx.New(ircx.Config{Addr: srv.Addr, Nick: "puppet" + string(rune('a'+i)), Dialer: dialer})
			if err := c.Connect(context.Background()); err != nil {
				t.Error(err)
				return
			}
			c.Close()
		})
	}
	wg.Wait()
	// 2 at once, then 4 at 100 ms intervals.
	if took := time.Since(start); took < 350*time.Millisecond {
		t.Errorf("%d connections took %s, want ≥ 400 ms", n, took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := ircx.NewDialer(1, 1).Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	slow := ircx.NewDialer(1, 1)
	_ = slow.Wait(context.Background())
	if err := slow.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a slot after the deadline: %v", err)
	}
}

func TestTLS(t *testing.T) {
	srv := ircxtest.Start(t, &ircxtest.Options{TLS: true})
	// The test server's certificate is self-signed: refused unless
	// TLSInsecure.
	c := ircx.New(ircx.Config{Addr: srv.TLSAddr, Nick: "alice", TLS: true, TLSServerName: ircxtest.ServerName})
	var certErr *tls.CertificateVerificationError
	if err := c.Connect(context.Background()); !errors.As(err, &certErr) {
		t.Errorf("self-signed certificate: %v, want a certificate error", err)
	}
	alice := connect(t, srv.TLSAddr, "alice", func(c *ircx.Config) { c.TLS, c.TLSInsecure = true, true })
	bob := ircxtest.Dial(t, srv.Addr, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := alice.SendText(ctx, "PRIVMSG", "bob", "over TLS"); err != nil {
		t.Fatal(err)
	}
	bob.Expect(wait, cmd("PRIVMSG", "bob", "over TLS"))
	// A plain client on the TLS port times out instead of registering.
	c = ircx.New(ircx.Config{Addr: srv.TLSAddr, Nick: "plain", RegisterTimeout: 500 * time.Millisecond})
	if err := c.Connect(context.Background()); err == nil {
		t.Error("a plain connection registered on the TLS port")
	}
}

func TestServerPassword(t *testing.T) {
	srv := ircxtest.Start(t, &ircxtest.Options{Password: "open sesame"})
	c := ircx.New(ircx.Config{Addr: srv.Addr, Nick: "alice", Password: "wrong"})
	err := c.Connect(context.Background())
	if err == nil {
		t.Fatal("registered with a wrong password")
	}
	t.Logf("wrong password: %v", err)
	alice := connect(t, srv.Addr, "alice", func(c *ircx.Config) { c.Password = "open sesame" })
	if !alice.Connected() {
		t.Error("not connected with the right password")
	}
}
