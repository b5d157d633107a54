package ircx_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
)

// ngircd has no services, so no SASL: these tests script the server side
// of the exchange on a loopback listener.

// scripted is one connection of a scripted IRC server.
type scripted struct {
	t  *testing.T
	r  *bufio.Reader
	nc net.Conn
}

// expect reads the next line and fails unless it starts with prefix.
func (s *scripted) expect(prefix string) string {
	_ = s.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := s.r.ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if err != nil || !strings.HasPrefix(line, prefix) {
		panic(fmt.Sprintf("scripted server: want %q…, got %q (%v)", prefix, line, err))
	}
	return line
}

func (s *scripted) send(lines ...string) {
	for _, l := range lines {
		if _, err := s.nc.Write([]byte(l + "\r\n")); err != nil {
			panic(fmt.Sprintf("scripted server: write: %v", err))
		}
	}
}

// welcome ends a registration.
func (s *scripted) welcome(nick string) {
	s.send(":srv 001 "+nick+" :Welcome "+nick+"!u@h", ":srv 005 "+nick+" CASEMAPPING=ascii NETWORK=Fake :are supported", ":srv 422 "+nick+" :No MOTD")
}

// scriptServer serves one connection with script and returns its address
// and a channel that gets the script's failure (or nil).
func scriptServer(t *testing.T, script func(s *scripted)) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	result := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			result <- err
			return
		}
		defer nc.Close()
		defer func() {
			if p := recover(); p != nil {
				result <- fmt.Errorf("%v", p)
				return
			}
			result <- nil
		}()
		script(&scripted{t: t, r: bufio.NewReader(nc), nc: nc})
	}()
	return ln.Addr().String(), result
}

// saslScript negotiates caps (with a two-line CAP LS) and reads the
// AUTHENTICATE exchange; it returns what the client sent decoded and the
// raw chunks, and answers with the numerics given.
func saslScript(offer string, answer []string, payload *string, chunks *[]string) func(s *scripted) {
	return func(s *scripted) {
		s.expect("CAP LS 302")
		s.expect("NICK alice")
		s.expect("USER alice 0 * ")
		s.send(":srv CAP * LS * :multi-prefix away-notify", ":srv CAP * LS :"+offer)
		s.expect("CAP REQ :multi-prefix away-notify sasl")
		s.send(":srv CAP * ACK :multi-prefix away-notify sasl")
		s.expect("AUTHENTICATE PLAIN")
		s.send("AUTHENTICATE +")
		var enc string
		for {
			chunk := strings.TrimPrefix(s.expect("AUTHENTICATE "), "AUTHENTICATE ")
			*chunks = append(*chunks, chunk)
			if chunk != "+" {
				enc += chunk
			}
			if len(chunk) < 400 {
				break
			}
		}
		dec, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			panic(err)
		}
		*payload = string(dec)
		s.send(answer...)
		if strings.Contains(answer[len(answer)-1], " 903 ") {
			s.expect("CAP END")
			s.welcome("alice")
			// A line after registration, with server-time.
			s.send("@time=2024-01-02T03:04:05.678Z;account=bobacct :bob!b@h PRIVMSG alice :hi")
			s.expect("QUIT ")
			s.send("ERROR :Closing link")
		}
	}
}

func TestSASLPlain(t *testing.T) {
	caps := []string{"multi-prefix", "away-notify", "sasl"}
	cases := []struct {
		name     string
		password string
		chunks   int
		plus     bool // ends with "AUTHENTICATE +"
	}{
		{"short", "hunter2", 1, false},
		// "acct\0acct\0" + 290 bytes = 300 bytes = 400 base64 bytes:
		// one full chunk, then "+".
		{"exactly 400", strings.Repeat("p", 290), 2, true},
		{"chunked", strings.Repeat("é", 300), 3, false}, // 610 bytes → 816 base64 bytes
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var payload string
			var chunks []string
			addr, result := scriptServer(t, saslScript("sasl=PLAIN,EXTERNAL server-time", []string{
				":srv 900 alice alice!u@h acct :You are now logged in as acct",
				":srv 903 alice :SASL authentication successful",
			}, &payload, &chunks))
			events := make(chan *ircx.Event, 100)
			c := ircx.New(ircx.Config{
				Addr: addr, Nick: "alice", Caps: caps,
				SASL:    &ircx.SASLPlain{Account: "acct", Password: tc.password},
				OnEvent: func(_ *ircx.Conn, ev *ircx.Event) { events <- ev },
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Connect(ctx); err != nil {
				t.Fatalf("Connect: %v (server: %v)", err, <-result)
			}
			if want := "acct\x00acct\x00" + tc.password; payload != want {
				t.Errorf("payload %q, want %q", payload, want)
			}
			if len(chunks) != tc.chunks || (chunks[len(chunks)-1] == "+") != tc.plus {
				t.Errorf("%d chunks of sizes %v", len(chunks), lens(chunks))
			}
			if c.Account() != "acct" || !c.HasCap("sasl") || !c.HasCap("multi-prefix") || c.HasCap("server-time") {
				t.Errorf("account %q caps %v", c.Account(), c.Caps())
			}
			if c.ISupport().Network != "Fake" || c.ISupport().CaseMapping != ircx.ASCII {
				t.Errorf("ISUPPORT %+v", c.ISupport())
			}
			// The event callback parses server-time, and keeps tags and
			// the prefix.
			for ev := range events {
				if ev.Command != "PRIVMSG" {
					continue
				}
				want := time.Date(2024, 1, 2, 3, 4, 5, 678e6, time.UTC)
				if !ev.ServerTime || !ev.Time.Equal(want) || ev.Tags["account"] != "bobacct" || ev.Prefix.Name != "bob" || ev.Trailing() != "hi" {
					t.Errorf("event: %+v time %s", ev.Message, ev.Time)
				}
				break
			}
			if err := c.Quit(ctx, "bye"); err != nil {
				t.Error(err)
			}
			if err := <-result; err != nil {
				t.Error(err)
			}
			if !errors.Is(c.Err(), ircx.ErrClosed) {
				t.Errorf("after Quit: %v", c.Err())
			}
		})
	}
}

func lens(chunks []string) []int {
	var n []int
	for _, c := range chunks {
		n = append(n, len(c))
	}
	return n
}

func TestSASLFailure(t *testing.T) {
	var payload string
	var chunks []string
	addr, result := scriptServer(t, saslScript("sasl", []string{":srv 904 alice :SASL authentication failed"}, &payload, &chunks))
	c := ircx.New(ircx.Config{Addr: addr, Nick: "alice", Caps: []string{"multi-prefix", "away-notify", "sasl"},
		SASL: &ircx.SASLPlain{Account: "acct", Password: "wrong"}})
	err := c.Connect(context.Background())
	var saslErr *ircx.SASLError
	if !errors.As(err, &saslErr) || saslErr.Code != "904" {
		t.Errorf("Connect: %v, want a 904 SASLError", err)
	}
	if err := <-result; err != nil {
		t.Error(err)
	}
	if c.Connected() {
		t.Error("connected after a SASL failure")
	}
}

func TestSASLUnavailable(t *testing.T) {
	for name, offer := range map[string]string{"no sasl": "multi-prefix", "no PLAIN": "sasl=EXTERNAL multi-prefix"} {
		t.Run(name, func(t *testing.T) {
			addr, result := scriptServer(t, func(s *scripted) {
				s.expect("CAP LS 302")
				s.expect("NICK alice")
				s.expect("USER alice")
				s.send(":srv CAP * LS :" + offer)
				// The client gives up: the connection closes.
				_ = s.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				if line, err := s.r.ReadString('\n'); err == nil {
					panic("client went on with " + line)
				}
			})
			c := ircx.New(ircx.Config{Addr: addr, Nick: "alice", SASL: &ircx.SASLPlain{Account: "a", Password: "p"}})
			if err := c.Connect(context.Background()); !errors.Is(err, ircx.ErrSASLUnavailable) {
				t.Errorf("Connect: %v, want ErrSASLUnavailable", err)
			}
			if err := <-result; err != nil {
				t.Error(err)
			}
		})
	}
}

// TestNoCAPServer: a server that answers CAP with 421 still registers.
func TestNoCAPServer(t *testing.T) {
	addr, result := scriptServer(t, func(s *scripted) {
		s.expect("CAP LS 302")
		s.send(":srv 421 * CAP :Unknown command")
		s.expect("NICK alice")
		s.expect("USER alice")
		s.welcome("alice")
		s.expect("QUIT")
	})
	c := ircx.New(ircx.Config{Addr: addr, Nick: "alice"})
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(c.Caps()) != 0 || c.Nick() != "alice" {
		t.Errorf("caps %v nick %q", c.Caps(), c.Nick())
	}
	_ = c.Quit(context.Background(), "bye")
	if err := <-result; err != nil {
		t.Error(err)
	}
}
