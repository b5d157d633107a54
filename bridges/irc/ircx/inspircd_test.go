package ircx_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
)

// End-to-end tests against a real InspIRCd 3 with Atheme services
// (ircxtest.StartInspIRCd): the IRCv3 capabilities and the SASL login
// that ngircd lacks. Each test starts its own server.

// offeredCaps asks the server for its capabilities as a plain client
// (CAP LS 302, maybe over several lines) and returns their names.
func offeredCaps(t *testing.T, addr string) []string {
	t.Helper()
	watcher := ircxtest.Dial(t, addr, "capwatcher")
	watcher.Send("CAP LS 302")
	var offered []string
	for {
		m := watcher.Expect(wait, cmd("CAP"))
		for _, tok := range strings.Fields(m.Trailing()) {
			name, _, _ := strings.Cut(tok, "=")
			offered = append(offered, name)
		}
		if m.Param(2) != "*" {
			return offered
		}
	}
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestInspIRCdCaps(t *testing.T) {
	t.Parallel()
	srv := ircxtest.StartInspIRCd(t, nil)

	offered := offeredCaps(t, srv.Addr)
	t.Logf("InspIRCd offers: %v", offered)
	// What the harness's modules provide; sasl since the services are
	// linked.
	for _, c := range []string{"server-time", "message-tags", "echo-message", "labeled-response", "account-tag",
		"batch", "multi-prefix", "away-notify", "sasl"} {
		if !slices.Contains(offered, c) {
			t.Errorf("InspIRCd does not offer %s: %v", c, offered)
		}
	}

	alice := connect(t, srv.Addr, "alice", nil)
	// Enabled: DefaultCaps that the server offers, sasl only for a login.
	var want []string
	for _, c := range ircx.DefaultCaps {
		if slices.Contains(offered, c) && c != "sasl" {
			want = append(want, c)
		}
	}
	if got := alice.Caps(); !slices.Equal(sortedCopy(got), sortedCopy(want)) {
		t.Errorf("caps %v, want %v", got, want)
	}
	is := alice.ISupport()
	if is.Network != srv.Network || is.NickLen != 30 || is.CaseMapping != ircx.ASCII || is.PrefixModes != "ov" || is.PrefixChars != "@+" {
		t.Errorf("ISUPPORT %+v", is)
	}

	bob := connect(t, srv.Addr, "bob", nil)
	alice.join(t, "#caps")

	t.Run("multi-prefix", func(t *testing.T) {
		alice.send(t, "MODE #caps +v alice")
		eventually(t, "alice +ov", func() bool { m, _ := alice.Member("#caps", "alice"); return m.Modes == "ov" })
		bob.join(t, "#caps")
		// Only with multi-prefix does NAMES show "@+alice" rather than
		// "@alice".
		eventually(t, "bob seeing alice +ov", func() bool { m, _ := bob.Member("#caps", "alice"); return m.Modes == "ov" })
	})

	t.Run("away-notify", func(t *testing.T) {
		eventually(t, "bob in #caps", func() bool { _, ok := bob.Member("#caps", "bob"); return ok })
		alice.send(t, "AWAY :gone fishing")
		ev := bob.expect(t, "alice's AWAY", func(ev *ircx.Event) bool { return ev.Command == "AWAY" })
		if ev.Prefix.Name != "alice" || ev.Trailing() != "gone fishing" {
			t.Errorf("bob saw %s", ev.Message)
		}
		alice.send(t, "AWAY")
		ev = bob.expect(t, "alice back", func(ev *ircx.Event) bool { return ev.Command == "AWAY" })
		if ev.Prefix.Name != "alice" || len(ev.Params) != 0 {
			t.Errorf("bob saw %s", ev.Message)
		}
	})

	t.Run("labeled-response", func(t *testing.T) {
		alice.send(t, "@label=ping1 PING :hello")
		ev := alice.expect(t, "labelled PONG", func(ev *ircx.Event) bool { return ev.Command == "PONG" && ev.Trailing() == "hello" })
		if got, _ := ev.Tags.GetTag("label"); got != "ping1" {
			t.Errorf("PONG %s: label %q, want ping1", ev.Message, got)
		}
		// A reply of several lines comes as a labelled batch.
		alice.send(t, "@label=whois1 WHOIS bob")
		start := alice.expect(t, "BATCH start", func(ev *ircx.Event) bool { return ev.Command == "BATCH" })
		id, ok := strings.CutPrefix(start.Param(0), "+")
		if label, _ := start.Tags.GetTag("label"); !ok || label != "whois1" || start.Param(1) != "labeled-response" {
			t.Fatalf("batch start %s", start.Message)
		}
		ev = alice.expect(t, "WHOIS reply", func(ev *ircx.Event) bool { return ev.Command == "311" })
		if got, _ := ev.Tags.GetTag("batch"); got != id || ev.Param(1) != "bob" {
			t.Errorf("311 %s: batch %q, want %q", ev.Message, got, id)
		}
		alice.expect(t, "BATCH end", func(ev *ircx.Event) bool { return ev.Command == "BATCH" && ev.Param(0) == "-"+id })
	})
}

func TestInspIRCdSASL(t *testing.T) {
	t.Parallel()
	srv := ircxtest.StartInspIRCd(t, nil)
	srv.RegisterAccount(t, "alice", "correct-horse")
	watcher := ircxtest.Dial(t, srv.Addr, "watcher")

	login := func(nick, account, password string) (*ircx.Conn, error) {
		c := ircx.New(ircx.Config{Addr: srv.Addr, Nick: nick, SASL: &ircx.SASLPlain{Account: account, Password: password}})
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		err := c.Connect(ctx)
		t.Cleanup(func() { c.Close() })
		return c, err
	}

	t.Run("login", func(t *testing.T) {
		c, err := login("alice1", "alice", "correct-horse")
		if err != nil {
			t.Fatalf("SASL login: %v", err)
		}
		if c.Account() != "alice" || !c.HasCap("sasl") {
			t.Errorf("account %q, caps %v", c.Account(), c.Caps())
		}
		// Others see the account too.
		watcher.Send("WHOIS alice1")
		if m := watcher.Expect(wait, cmd("330")); m.Param(1) != "alice1" || m.Param(2) != "alice" {
			t.Errorf("WHOIS: %s", m)
		}
	})

	for _, tc := range []struct{ name, account, password string }{
		{"wrong password", "alice", "battery-staple"},
		{"unknown account", "nobody-here", "correct-horse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := login("alice2", tc.account, tc.password)
			var saslErr *ircx.SASLError
			if !errors.As(err, &saslErr) || saslErr.Code != "904" {
				t.Fatalf("Connect: %v, want a SASLError 904", err)
			}
			if c.Connected() || c.Account() != "" {
				t.Errorf("connected %v, account %q after a refused login", c.Connected(), c.Account())
			}
		})
	}

	t.Run("NickServ IDENTIFY", func(t *testing.T) {
		c := connect(t, srv.Addr, "alice3", nil)
		c.send(t, "PRIVMSG NickServ :IDENTIFY alice correct-horse")
		ev := c.expect(t, "900 logged in", func(ev *ircx.Event) bool { return ev.Command == "900" })
		if ev.Param(2) != "alice" {
			t.Errorf("900: %s", ev.Message)
		}
	})

	t.Run("services down", func(t *testing.T) {
		srv.StopServices(t)
		if _, err := login("alice4", "alice", "correct-horse"); !errors.Is(err, ircx.ErrSASLUnavailable) {
			t.Fatalf("Connect without services: %v, want ErrSASLUnavailable", err)
		}
		// Back, with the account kept in the services' database.
		srv.StartServices(t)
		c, err := login("alice5", "alice", "correct-horse")
		if err != nil || c.Account() != "alice" {
			t.Fatalf("SASL login after the services restarted: %v, account %q", err, c.Account())
		}
	})
}

func TestInspIRCdMessageTags(t *testing.T) {
	t.Parallel()
	srv := ircxtest.StartInspIRCd(t, nil)
	srv.RegisterAccount(t, "bobacct", "bobs-password")

	alice := connect(t, srv.Addr, "alice", nil)
	bob := connect(t, srv.Addr, "bob", func(c *ircx.Config) {
		c.SASL = &ircx.SASLPlain{Account: "bobacct", Password: "bobs-password"}
	})
	alice.join(t, "#room")
	bob.join(t, "#room")
	eventually(t, "alice seeing bob", func() bool { _, ok := alice.Member("#room", "bob"); return ok })

	privmsg := func(from, target, text string) func(*ircx.Event) bool {
		return func(ev *ircx.Event) bool {
			return ev.Command == "PRIVMSG" && ev.Prefix.Name == from && ev.Param(0) == target && ev.Trailing() == text
		}
	}
	// checkTime checks that ev carries the server's time.
	checkTime := func(t *testing.T, ev *ircx.Event) {
		t.Helper()
		tag, _ := ev.Tags.GetTag("time")
		ts, err := time.Parse(time.RFC3339Nano, tag)
		if !ev.ServerTime || err != nil || !ev.Time.Equal(ts) {
			t.Errorf("%s: ServerTime %v, Time %v, time tag %q", ev.Message, ev.ServerTime, ev.Time, tag)
		}
		if d := time.Since(ev.Time); d < -5*time.Second || d > 5*time.Second {
			t.Errorf("%s: server time %v is %v off the clock", ev.Message, ev.Time, d)
		}
	}

	var bobMsgID string
	t.Run("from another user", func(t *testing.T) {
		bob.send(t, "PRIVMSG #room :hello from bob")
		ev := alice.expect(t, "bob's message", privmsg("bob", "#room", "hello from bob"))
		checkTime(t, ev)
		if acct, _ := ev.Tags.GetTag("account"); acct != "bobacct" {
			t.Errorf("%s: account tag %q, want bobacct", ev.Message, acct)
		}
		if bobMsgID, _ = ev.Tags.GetTag("msgid"); bobMsgID == "" {
			t.Errorf("%s: no msgid", ev.Message)
		}
		// The sender sees its own message (echo-message), with the same
		// msgid.
		echo := bob.expect(t, "bob's echo", privmsg("bob", "#room", "hello from bob"))
		checkTime(t, echo)
		if id, _ := echo.Tags.GetTag("msgid"); id != bobMsgID {
			t.Errorf("echo %s: msgid %q, want %q", echo.Message, id, bobMsgID)
		}
	})

	t.Run("echo-message", func(t *testing.T) {
		alice.send(t, "PRIVMSG #room :hello from alice")
		echo := alice.expect(t, "alice's echo", privmsg("alice", "#room", "hello from alice"))
		checkTime(t, echo)
		ev := bob.expect(t, "alice's message", privmsg("alice", "#room", "hello from alice"))
		// alice is not logged in: no account tag.
		if acct, ok := ev.Tags.GetTag("account"); ok {
			t.Errorf("%s: account tag %q for a user not logged in", ev.Message, acct)
		}
		echoID, _ := echo.Tags.GetTag("msgid")
		if id, _ := ev.Tags.GetTag("msgid"); id == "" || id != echoID || id == bobMsgID {
			t.Errorf("msgid %q, echoed %q, bob's earlier %q", id, echoID, bobMsgID)
		}
	})

	t.Run("labelled echo", func(t *testing.T) {
		alice.send(t, "@label=m1 PRIVMSG bob :direct")
		echo := alice.expect(t, "alice's echo", privmsg("alice", "bob", "direct"))
		if label, _ := echo.Tags.GetTag("label"); label != "m1" {
			t.Errorf("echo %s: label %q, want m1", echo.Message, label)
		}
		ev := bob.expect(t, "alice's direct message", privmsg("alice", "bob", "direct"))
		if label, ok := ev.Tags.GetTag("label"); ok {
			t.Errorf("%s: the recipient got the sender's label %q", ev.Message, label)
		}
	})
}

// TestInspIRCdNoServices: without services the server offers no SASL,
// and a login fails with ErrSASLUnavailable before registering.
func TestInspIRCdNoServices(t *testing.T) {
	t.Parallel()
	srv := ircxtest.StartInspIRCd(t, &ircxtest.InspOptions{NoServices: true})
	if offered := offeredCaps(t, srv.Addr); slices.Contains(offered, "sasl") {
		t.Errorf("sasl offered without services: %v", offered)
	}
	c := ircx.New(ircx.Config{Addr: srv.Addr, Nick: "alice", SASL: &ircx.SASLPlain{Account: "alice", Password: "pw"}})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Connect(ctx); !errors.Is(err, ircx.ErrSASLUnavailable) {
		t.Errorf("Connect: %v, want ErrSASLUnavailable", err)
	}
}
