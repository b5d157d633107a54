package irc

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
	"github.com/switchboard-im/switchboard/framework/testkit"
)

func TestIsNetsplitQuit(t *testing.T) {
	for msg, want := range map[string]bool{
		"irc.a.net irc.b.net":       true,
		"*.net *.split":             true,
		"hub.example.org leaf-2.eu": true,
		"irc.a.net irc.a.net":       false, // a server does not split from itself
		"irc.a.net":                 false,
		"irc.a.net irc.b.net bye":   false,
		"\"irc.a.net irc.b.net\"":   false, // ngircd quotes what clients say
		"Quit: irc.a.net irc.b.net": false,
		"going home":                false,
		"":                          false,
		"Ping timeout: 120 seconds": false,
		"a.net .b.net":              false,
		"Client closed connection":  false,
	} {
		if got := isNetsplitQuit(msg); got != want {
			t.Errorf("isNetsplitQuit(%q) = %v, want %v", msg, got, want)
		}
	}
}

// The debouncer on a clock of the test's.
func TestSplitDebouncer(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	d := newSplitDebouncer(time.Minute, clock, strings.ToLower)

	d.quit("Bob", []string{"#a", "#B"})
	d.quit("carol", []string{"#a"})
	if got := d.expire(); len(got) != 0 {
		t.Fatalf("expired at once: %v", got)
	}
	advance(30 * time.Second)
	d.quit("dave", []string{"#a"})
	// bob comes back to #b only; carol to #a.
	if !d.rejoin("bob", "#b") || !d.rejoin("CAROL", "#A") {
		t.Fatal("a rejoin within the grace was not recognised")
	}
	if d.rejoin("carol", "#a") || d.rejoin("erin", "#a") || d.rejoin("dave", "#other") {
		t.Fatal("a join that ends no netsplit quit was taken for one")
	}
	advance(29 * time.Second)
	if got := d.expire(); len(got) != 0 {
		t.Fatalf("expired before the grace: %v", got)
	}
	advance(time.Second)
	got := d.expire()
	if len(got) != 1 || got[0].nick != "Bob" || len(got[0].channels) != 1 || got[0].channels["#a"] != "#a" {
		t.Fatalf("after 60s expired %+v, want Bob from #a only", got)
	}
	if d.rejoin("bob", "#a") {
		t.Fatal("a rejoin after the grace was taken for a return from the split")
	}
	advance(30 * time.Second)
	if got := d.expire(); len(got) != 1 || got[0].nick != "dave" {
		t.Fatalf("expired %+v, want dave", got)
	}
	if d.len() != 0 {
		t.Fatalf("%d left pending", d.len())
	}

	// A second split of the same user restarts the grace.
	d.quit("bob", []string{"#a"})
	advance(50 * time.Second)
	d.quit("bob", []string{"#c"})
	advance(20 * time.Second)
	if got := d.expire(); len(got) != 0 {
		t.Fatalf("expired %+v though bob split again 20s ago", got)
	}
	advance(40 * time.Second)
	if got := d.expire(); len(got) != 1 || len(got[0].channels) != 2 {
		t.Fatalf("expired %+v, want bob from #a and #c", got)
	}

	// Many at once come out in a stable order.
	for _, nick := range []string{"u3", "u1", "u2"} {
		d.quit(nick, []string{"#a"})
	}
	advance(time.Minute)
	var nicks []string
	for _, q := range d.expire() {
		nicks = append(nicks, q.nick)
	}
	if !slices.Equal(nicks, []string{"u1", "u2", "u3"}) {
		t.Fatalf("expired in order %v", nicks)
	}
}

// Netsplit quits through the bridge to Matrix, with the IRC side scripted:
// the IRC users here are ghosts brought in, and split off, by JOIN and QUIT
// lines handed to the bot's event handler as its connection would (so the
// bot's member list does not have them, and a rejoin must be recognised
// as the end of the split); the Matrix side is real. Twelve quits at once
// show the pacing. TestNetsplit below splits real servers.
func TestNetsplitDebounce(t *testing.T) {
	const grace = 300 * time.Millisecond
	e := startEnv(t, func(c *Config) { c.Networks[0].NetsplitGrace = grace })
	alice := e.kit.NewUser("alice")
	carol := e.ircUser("carol", "#split")
	room := e.joinPortal(alice, "#split")
	carol.Expect(wait, ircCmd("JOIN", "alice[m]", "#split"))
	n := e.br.core.networks["test"]
	feed := func(line string, channels ...string) {
		n.onBotEvent(n.bot, &ircx.Event{Message: irc.MustParseMessage(line), Channels: channels})
	}
	leaves := func(nick string) []*event.Event {
		resp, err := alice.Messages(e.ctx, room, "", "", mautrix.DirectionBackward, nil, 500)
		if err != nil {
			t.Fatal(err)
		}
		var out []*event.Event
		for _, evt := range resp.Chunk {
			if membership(e.ghost(nick), event.MembershipLeave)(evt) {
				out = append(out, evt)
			}
		}
		return out
	}

	t.Run("back within the grace: nothing shown", func(t *testing.T) {
		feed(":hank!h@host JOIN #split")
		testkit.WaitForJoin(t, alice, room, e.ghost("hank"), wait)
		feed(":hank!h@host QUIT :irc.a.net irc.b.net", "#split")
		time.Sleep(grace / 3)
		feed(":hank!h@host JOIN #split")
		time.Sleep(2 * grace)
		testkit.WaitForJoin(t, alice, room, e.ghost("hank"), wait)
		if l := leaves("hank"); len(l) != 0 {
			t.Errorf("hank's ghost left and came back: %d leaves", len(l))
		}
	})

	t.Run("not back: leaves after the grace", func(t *testing.T) {
		feed(":ivy!i@host JOIN #split")
		testkit.WaitForJoin(t, alice, room, e.ghost("ivy"), wait)
		start := time.Now()
		feed(":ivy!i@host QUIT :irc.a.net irc.b.net", "#split")
		leave := testkit.WaitForEvent(t, alice, room, membership(e.ghost("ivy"), event.MembershipLeave), wait)
		if time.Since(start) < grace {
			t.Errorf("ivy's ghost left after %s, before the grace of %s", time.Since(start), grace)
		}
		if r := leave.Content.AsMember().Reason; r != "netsplit" {
			t.Errorf("leave reason %q, want netsplit", r)
		}
	})

	t.Run("many quits are paced", func(t *testing.T) {
		const count = 12
		var nicks []string
		for i := range count {
			nick := "user" + string(rune('a'+i))
			nicks = append(nicks, nick)
			feed(":" + nick + "!u@host JOIN #split")
		}
		for _, nick := range nicks {
			testkit.WaitForJoin(t, alice, room, e.ghost(nick), wait)
		}
		for _, nick := range nicks {
			feed(":"+nick+"!u@host QUIT :*.net *.split", "#split")
		}
		var first, last time.Time
		for _, nick := range nicks {
			evt := testkit.WaitForEvent(t, alice, room, membership(e.ghost(nick), event.MembershipLeave), 2*wait)
			ts := time.UnixMilli(evt.Timestamp)
			if first.IsZero() || ts.Before(first) {
				first = ts
			}
			if ts.After(last) {
				last = ts
			}
		}
		if min := (count - 1) * splitLeaveInterval * 8 / 10; last.Sub(first) < min {
			t.Errorf("%d leaves within %s, want them spread over at least %s", count, last.Sub(first), min)
		}
	})

	t.Run("ordinary quit leaves at once", func(t *testing.T) {
		dave := e.ircUser("dave", "#split")
		testkit.WaitForJoin(t, alice, room, e.ghost("dave"), wait)
		dave.Send("QUIT :irc.a.net irc.b.net") // quoted by ngircd: not a netsplit
		leave := testkit.WaitForEvent(t, alice, room, membership(e.ghost("dave"), event.MembershipLeave), wait)
		if r := leave.Content.AsMember().Reason; !strings.HasPrefix(r, "Quit: ") {
			t.Errorf("quit reason %q, want an ordinary quit", r)
		}
	})
}

// A real netsplit: the bridge's ngircd (irc.test) linked to a second one
// (irc2.test) by an IRC operator's CONNECT, split by SQUIT. The users of
// irc2.test quit with "irc.test irc2.test" for the bridge.
func TestNetsplit(t *testing.T) {
	const grace = time.Second
	far := ircxtest.Start(t, &ircxtest.Options{ExtraOptions: `
[Global]
	Name = irc2.test
[Server]
	Name = irc.test
	MyPassword = link-far
	PeerPassword = link-near
`})
	_, farPort, _ := net.SplitHostPort(far.Addr)
	e := startEnvOn(t, &ircxtest.Options{ExtraOptions: fmt.Sprintf(`
[Operator]
	Name = oper
	Password = oper-pw
[Server]
	Name = irc2.test
	Host = 127.0.0.1
	Port = %s
	MyPassword = link-near
	PeerPassword = link-far
`, farPort)}, func(c *Config) { c.Networks[0].NetsplitGrace = grace }, nil)
	oper := ircxtest.Dial(t, e.srv.Addr, "oper")
	oper.Send("OPER oper oper-pw")
	oper.Expect(wait, func(m *irc.Message) bool { return m.Command == "381" })
	link := func() { oper.Send("CONNECT irc2.test") }
	split := func() {
		oper.Send("SQUIT irc2.test :test split")
		oper.Expect(wait, func(m *irc.Message) bool {
			return m.Command == "QUIT" && m.Prefix != nil && strings.EqualFold(m.Prefix.Name, "bob") && m.Trailing() == "irc.test irc2.test"
		})
	}
	link()

	alice := e.kit.NewUser("alice")
	carol := e.ircUser("carol", "#split")
	oper.Send("JOIN #split") // oper sees the quits
	room := e.joinPortal(alice, "#split")
	carol.Expect(wait, ircCmd("JOIN", "alice[m]", "#split"))
	var far1 []*ircxtest.Client
	for _, nick := range []string{"bob", "dan"} {
		cl := ircxtest.Dial(t, far.Addr, nick)
		cl.Send("JOIN #split")
		far1 = append(far1, cl)
		carol.Expect(wait, ircCmd("JOIN", nick, "#split")) // the servers are linked
		testkit.WaitForJoin(t, alice, room, e.ghost(nick), wait)
	}
	leaves := func() int {
		resp, err := alice.Messages(e.ctx, room, "", "", mautrix.DirectionBackward, nil, 500)
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for _, evt := range resp.Chunk {
			if membership(e.ghost("bob"), event.MembershipLeave)(evt) || membership(e.ghost("dan"), event.MembershipLeave)(evt) {
				count++
			}
		}
		return count
	}

	t.Run("split and relink within the grace: nothing shown", func(t *testing.T) {
		split()
		time.Sleep(grace / 4)
		link()
		back := map[string]bool{}
		for len(back) < 2 {
			m := carol.Expect(wait, func(m *irc.Message) bool { return m.Command == "JOIN" && m.Prefix != nil })
			back[strings.ToLower(m.Prefix.Name)] = true
		}
		time.Sleep(grace + 500*time.Millisecond)
		far1[0].Send("PRIVMSG #split :still here")
		testkit.WaitForEvent(t, alice, room, from(e.ghost("bob"), testkit.HasBody("still here")), wait)
		if n := leaves(); n != 0 {
			t.Errorf("%d ghost leaves shown for a split that healed", n)
		}
	})

	t.Run("split for longer than the grace: the ghosts leave", func(t *testing.T) {
		start := time.Now()
		split()
		for _, nick := range []string{"bob", "dan"} {
			leave := testkit.WaitForEvent(t, alice, room, membership(e.ghost(nick), event.MembershipLeave), wait)
			if r := leave.Content.AsMember().Reason; r != "netsplit" {
				t.Errorf("%s left with %q, want netsplit", nick, r)
			}
		}
		if d := time.Since(start); d < grace {
			t.Errorf("the ghosts left after %s, within the grace of %s", d, grace)
		}
		// Back later: they join again.
		link()
		testkit.WaitForJoin(t, alice, room, e.ghost("bob"), wait)
		testkit.WaitForJoin(t, alice, room, e.ghost("dan"), wait)
	})
}
