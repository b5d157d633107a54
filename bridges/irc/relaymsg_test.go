package irc

import (
	"bufio"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/framework/bridge"
)

// relayServer is a scripted IRC server offering draft/relaymsg. No IRC
// server in Debian or the Go module proxy has RELAYMSG (Ergo, which does,
// is in neither), so this one stands in for it: just enough of a server
// for the bridge bot to register and join, recording what it is sent.
type relayServer struct {
	ln    net.Listener
	mu    sync.Mutex
	lines []string
	got   chan string
}

func startRelayServer(t *testing.T) *relayServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &relayServer{ln: ln, got: make(chan string, 100)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(nc)
		}
	}()
	return s
}

func (s *relayServer) serve(nc net.Conn) {
	defer nc.Close()
	r := bufio.NewReader(nc)
	send := func(lines ...string) { _, _ = nc.Write([]byte(strings.Join(lines, "\r\n") + "\r\n")) }
	nick := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		m, err := irc.ParseMessage(strings.TrimRight(line, "\r\n"))
		if err != nil {
			continue
		}
		switch m.Command {
		case "CAP":
			switch m.Param(0) {
			case "LS":
				send(":fake.test CAP * LS :draft/relaymsg=/ message-tags")
			case "REQ":
				send(":fake.test CAP * ACK :" + m.Trailing())
			}
		case "NICK":
			nick = m.Param(0)
		case "USER":
			send(":fake.test 001 "+nick+" :Welcome "+nick+"!bot@127.0.0.1",
				":fake.test 005 "+nick+" NETWORK=Fake CHANTYPES=# PREFIX=(ov)@+ NICKLEN=30 CASEMAPPING=ascii :are supported",
				":fake.test 376 "+nick+" :End of MOTD")
		case "JOIN":
			for ch := range strings.SplitSeq(m.Param(0), ",") {
				send(":"+nick+"!bot@127.0.0.1 JOIN "+ch, ":fake.test 353 "+nick+" = "+ch+" :@"+nick, ":fake.test 366 "+nick+" "+ch+" :End")
			}
		case "PING":
			send(":fake.test PONG fake.test :" + m.Param(0))
		case "MODE", "WHO", "TOPIC":
		default:
			s.got <- m.String()
		}
	}
}

func (s *relayServer) expect(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case line := <-s.got:
			if line == want {
				return
			}
		case <-deadline:
			t.Fatalf("the server was not sent %q", want)
		}
	}
}

// A relayed message goes as RELAYMSG from "name/m" where the server has
// draft/relaymsg, not as "name: text" from the bot.
func TestRelayMsg(t *testing.T) {
	fake := startRelayServer(t)
	_, port, _ := net.SplitHostPort(fake.ln.Addr().String())
	e := startEnv(t, func(c *Config) {
		c.Networks[0].Port, _ = strconv.Atoi(port)
		c.Permissions = map[string]bridge.Permission{c.ServerName: bridge.PermissionRelay}
		c.Relay.Enabled, c.Relay.Default = true, true
	})
	rita := e.kit.NewUser("rita")
	if err := rita.SetDisplayName(e.ctx, "Rita R."); err != nil {
		t.Fatal(err)
	}
	room := e.joinPortal(rita, "#relay")
	e.sendText(rita, room, "hello over relaymsg")
	fake.expect(t, "RELAYMSG #relay Rita_R_/m :hello over relaymsg")
	e.sendContent(rita, room, &event.MessageEventContent{MsgType: event.MsgEmote, Body: "waves"})
	fake.expect(t, "RELAYMSG #relay Rita_R_/m :\x01ACTION waves\x01")
}

func TestRelayMsgNick(t *testing.T) {
	for _, c := range []struct {
		name, seps string
		nickLen    int
		want       string
	}{
		{"Alice", "/", 30, "Alice/m"},
		{"Alice A.", "/", 30, "Alice_A_/m"},
		{"Ålice", "|/", 30, "_lice|m"},
		{"", "", 0, "matrix/m"},
		{"averyveryverylongdisplayname", "/", 12, "averyveryv/m"},
	} {
		if got := relayMsgNick(c.name, c.seps, c.nickLen); got != c.want {
			t.Errorf("relayMsgNick(%q, %q, %d) = %q, want %q", c.name, c.seps, c.nickLen, got, c.want)
		}
	}
}
