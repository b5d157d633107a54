package ircxtest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/internal/testpeer"
	"gopkg.in/irc.v3"
)

// InspIRCd and Atheme from the Debian packages inspircd (3.x) and
// atheme-services (7.2).
const (
	InspBinary   = "/usr/sbin/inspircd"
	AthemeBinary = "/usr/bin/atheme-services"
)

// ServicesName is the server name of the test network's services
// (Atheme), whose nicks are NickServ, ChanServ and SaslServ.
const ServicesName = "services.test"

// InspServer is a running InspIRCd 3, named ServerName, with the IRCv3
// modules (server-time, message-tags and msgid, echo-message,
// labeled-response, account-tag, batch, cap-notify, multi-prefix,
// away-notify, account-notify, extended-join) and, unless
// InspOptions.NoServices, Atheme services linked to it: NickServ
// (REGISTER, IDENTIFY), ChanServ (REGISTER, OP) and SaslServ (SASL
// PLAIN). Like Server it is configured for bridge tests: no connection
// limit per address, no flood penalty (a client is neither lagged nor
// killed for sending fast), nicks up to 30 bytes, up to 10000 channels
// per user, no DNS or ident lookups, and no registration throttle in
// the services. Both daemons run as nobody when the test runs as root.
type InspServer struct {
	// Addr is the client port's host:port on 127.0.0.1.
	Addr string
	// Network is the NETWORK announced in ISUPPORT.
	Network string

	t          testing.TB
	dir        string
	linkAddr   string
	password   string
	services   bool
	ircd, serv daemon

	wakerMu   sync.Mutex
	wakerStop func() // ends the waker and waits for it
}

// InspOptions tune StartInspIRCd; the zero value is fine.
type InspOptions struct {
	// NoServices starts InspIRCd alone: no SASL, no NickServ.
	NoServices bool
	// Password is the server password (PASS) clients must give.
	Password string
	// PingFreq is how often the server PINGs a client, which it drops
	// when the next PING is due unanswered (0: 120 s).
	PingFreq time.Duration
	// ExtraConfig is appended to inspircd.conf (more <module> tags…),
	// and ExtraServicesConfig to atheme.conf.
	ExtraConfig         string
	ExtraServicesConfig string
}

// StartInspIRCd starts InspIRCd, and Atheme linked to it, with a
// temporary configuration on free loopback ports and returns once the
// services are linked (SASL is offered, NickServ and SaslServ are
// online); both are stopped when the test ends and their logs shown if
// it failed. Without the packages the test is skipped, or fails when
// CI=true.
func StartInspIRCd(t testing.TB, opts *InspOptions) *InspServer {
	t.Helper()
	if opts == nil {
		opts = &InspOptions{}
	}
	need := [][2]string{{InspBinary, "inspircd"}}
	if !opts.NoServices {
		need = append(need, [2]string{AthemeBinary, "atheme-services"})
	}
	for _, n := range need {
		testpeer.RequireBinary(t, n[0], n[1])
	}
	pingFreq := opts.PingFreq
	if pingFreq <= 0 {
		pingFreq = 120 * time.Second
	}

	// Not t.TempDir: its parent is 0700, and nobody must read the config
	// and write the logs and the services database.
	dir, err := os.MkdirTemp("", "ircxtest-inspircd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		uid, gid := nobody(t)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}

	s := &InspServer{
		t: t, dir: dir, Network: "SwitchboardTest", password: opts.Password, services: !opts.NoServices,
		Addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		linkAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
	}
	linkPass := randomHex(t)
	files := map[string]string{
		"inspircd.conf": s.inspConfig(pingFreq, linkPass, opts),
		"motd.txt":      "Switchboard test server (InspIRCd)\n",
	}
	if s.services {
		files["atheme.conf"] = s.athemeConfig(linkPass, opts.ExtraServicesConfig)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Through sh to raise the open files limit to its maximum (see
	// Server.Start); exec keeps the PID, for the signals.
	s.ircd = daemon{name: "inspircd", argv: []string{"/bin/sh", "-c", `ulimit -n "$(ulimit -H -n)" 2>/dev/null; exec "$0" "$@"`,
		InspBinary, "--nofork", "--nopid", "--config", filepath.Join(dir, "inspircd.conf")}}
	s.serv = daemon{name: "atheme-services", argv: []string{AthemeBinary, "-n",
		"-c", filepath.Join(dir, "atheme.conf"), "-D", dir,
		"-l", filepath.Join(dir, "atheme.log"), "-p", filepath.Join(dir, "atheme.pid")}}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("InspIRCd and services logs:\n%s", s.Log())
		}
	})
	s.Start()
	return s
}

func randomHex(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func (s *InspServer) inspConfig(pingFreq time.Duration, linkPass string, opts *InspOptions) string {
	_, port, _ := net.SplitHostPort(s.Addr)
	linkHost, linkPort, _ := net.SplitHostPort(s.linkAddr)
	password := ""
	if s.password != "" {
		password = fmt.Sprintf(` password="%s"`, s.password)
	}
	// Keys: /usr/share/doc/inspircd/examples/{inspircd,modules,links}.conf.example.
	conf := fmt.Sprintf(`<server name="%[1]s" description="Switchboard test server" network="%[2]s" id="1SB">
<admin name="Switchboard tests" nick="admin" email="admin@%[1]s">
<path configdir="%[3]s" datadir="%[3]s" logdir="%[3]s" runtimedir="%[3]s">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="%[3]s/inspircd.log" flush="1">
<files motd="%[3]s/motd.txt">
<dns server="127.0.0.1" timeout="1">
<bind address="127.0.0.1" port="%[4]s" type="clients">

# No limit per address, no flood penalty (threshold never reached, so
# neither fakelag nor "Excess Flood"), large queues, no lookups.
<connect name="main" allow="*"%[5]s timeout="60" pingfreq="%[6]d"
	localmax="1000000" globalmax="1000000" maxconnwarn="no" limit="1000000"
	threshold="1000000000" commandrate="4000000000" fakelag="no"
	recvq="64K" softsendq="1M" hardsendq="16M"
	maxchans="10000" resolvehostnames="no" useident="no">
<channels users="10000" opers="10000">
<cidr ipv4clone="32" ipv6clone="128">
<performance softlimit="1000000" clonesonconnect="no" quietbursts="yes">
<options casemapping="ascii" syntaxhints="no" pingwarning="0">
<security hideulines="no" flatlinks="no" hidesplits="no" maxtargets="20">
<limits maxaway="200" maxchan="60" maxhost="64" maxident="10" maxkick="300" maxmodes="20" maxnick="30" maxquit="300" maxreal="130" maxtopic="330">
<maxlist chan="*" limit="1000">

<module name="cap">
# away-notify, account-notify, extended-join
<module name="ircv3">
<ircv3 accountnotify="yes" awaynotify="yes" extendedjoin="yes">
<module name="ircv3_accounttag">
<module name="ircv3_batch">
<module name="ircv3_capnotify">
# message-tags
<module name="ircv3_ctctags">
<module name="ircv3_echomessage">
<module name="ircv3_labeledresponse">
<module name="ircv3_msgid">
<module name="ircv3_servertime">
# multi-prefix
<module name="namesx">

# Services: SASL through them, accounts (+r, account tags), the link.
<module name="sasl">
<sasl target="%[7]s" requiressl="no">
<module name="services_account">
# Atheme's ChanServ is +d (deaf).
<module name="deaf">
<module name="spanningtree">
<uline server="%[7]s" silent="yes">
`, ServerName, s.Network, s.dir, port, password, int(pingFreq.Seconds()), ServicesName)
	if s.services {
		conf += fmt.Sprintf(`<bind address="%[1]s" port="%[2]s" type="servers">
<link name="%[3]s" ipaddr="%[1]s" port="%[2]s" allowmask="127.0.0.0/8" sendpass="%[4]s" recvpass="%[4]s">
`, linkHost, linkPort, ServicesName, linkPass)
	}
	return conf + opts.ExtraConfig + "\n"
}

func (s *InspServer) athemeConfig(linkPass, extra string) string {
	linkHost, linkPort, _ := net.SplitHostPort(s.linkAddr)
	// Keys: /usr/share/doc/atheme-services/examples/atheme.conf.example.
	// No general::ratelimit_* (no registration throttle), flood_msgs = 0
	// (no flood protection), no crypto module (passwords stored as
	// given: a throwaway database).
	return fmt.Sprintf(`loadmodule "modules/protocol/inspircd";
loadmodule "modules/backend/opensex";
loadmodule "modules/nickserv/main";
loadmodule "modules/nickserv/help";
loadmodule "modules/nickserv/register";
loadmodule "modules/nickserv/identify";
loadmodule "modules/nickserv/logout";
loadmodule "modules/nickserv/info";
loadmodule "modules/nickserv/ghost";
loadmodule "modules/nickserv/drop";
loadmodule "modules/nickserv/set_core";
loadmodule "modules/nickserv/set_password";
loadmodule "modules/chanserv/main";
loadmodule "modules/chanserv/help";
loadmodule "modules/chanserv/register";
loadmodule "modules/chanserv/op";
loadmodule "modules/chanserv/flags";
loadmodule "modules/chanserv/info";
loadmodule "modules/chanserv/drop";
loadmodule "modules/saslserv/main";
loadmodule "modules/saslserv/plain";

serverinfo {
	name = "%[1]s";
	desc = "Switchboard test services";
	numeric = "00A";
	recontime = 1;
	netname = "%[2]s";
	hidehostsuffix = "users.test";
	adminname = "Switchboard tests";
	adminemail = "admin@%[3]s";
	registeremail = "noreply@%[3]s";
	mta = "/bin/false";
	loglevel = { error; info; admin; network; register; };
	maxlogins = 1000;
	maxusers = 1000;
	mdlimit = 30;
	emaillimit = 1000;
	emailtime = 300;
	auth = none;
	casemapping = ascii;
};

uplink "%[3]s" {
	host = "%[4]s";
	port = %[5]s;
	password = "%[6]s";
};

nickserv {
	nick = "NickServ";
	user = "NickServ";
	host = "%[1]s";
	real = "Nickname Services";
	maxnicks = 5;
	expire = 0;
};

chanserv {
	nick = "ChanServ";
	user = "ChanServ";
	host = "%[1]s";
	real = "Channel Services";
	maxchans = 1000;
	expire = 0;
	templates {
		vop = "+AV";
		hop = "+AHehitrv";
		aop = "+AOehiortv";
		sop = "+AOaefhiorstv";
		founder = "+AFORaefhiorstv";
	};
};

saslserv {
	nick = "SaslServ";
	user = "SaslServ";
	host = "%[1]s";
	real = "SASL Authentication Agent";
};

general {
	flood_msgs = 0;
	flood_time = 10;
	kline_time = 7;
	clone_time = 0;
	commit_interval = 5;
	uplink_sendq_limit = 1048576;
	language = "en";
	immune_level = immune;
};
%[7]s
`, ServicesName, s.Network, ServerName, linkHost, linkPort, linkPass, extra)
}

// Start starts the server (and the services) again after Stop, on the
// same port, and waits until it accepts connections and the services are
// linked. The services keep their database: accounts survive.
func (s *InspServer) Start() {
	s.t.Helper()
	if err := s.ircd.start(); err != nil {
		s.t.Fatalf("ircxtest: %v (logs below)", err)
	}
	if err := s.ircd.waitDial(s.Addr); err != nil {
		s.t.Fatalf("ircxtest: %v (logs below)", err)
	}
	if s.services {
		if err := s.serv.start(); err != nil {
			s.t.Fatalf("ircxtest: %v (logs below)", err)
		}
	}
	// The connection that waits for the services stays as the waker.
	c, err := s.dialRaw("ircxtestwaker")
	if err == nil && s.services {
		if err = s.waitServices(c, true); err != nil {
			c.quit()
		}
	}
	if err != nil {
		s.t.Fatalf("ircxtest: %v (logs below)", err)
	}
	s.startWaker(c)
}

// Stop stops the services and the server (SIGTERM, then SIGKILL after
// 5 s); every client is disconnected. Start starts them again.
func (s *InspServer) Stop() {
	s.wakerMu.Lock()
	stop := s.wakerStop
	s.wakerStop = nil
	s.wakerMu.Unlock()
	if stop != nil {
		stop()
	}
	s.serv.stop()
	s.ircd.stop()
}

// startWaker keeps c, a registered connection, sending a PING every
// 50 ms until Stop. InspIRCd 3 completes registrations (sends 001) in its
// once-a-second housekeeping, on the first turn of its main loop in a
// new second, and an idle server's loop sleeps up to a second between
// turns: without traffic a connection waits a full second for its
// welcome, with it until the next second starts (0–1 s), as on a busy
// network.
func (s *InspServer) startWaker(c *rawConn) {
	_ = c.send("MODE ircxtestwaker +i")
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		defer c.nc.Close()
		for {
			select {
			case <-done:
				return
			default:
			}
			if c.send("PING :ircxtest") != nil {
				return
			}
			deadline := time.Now().Add(50 * time.Millisecond)
			for {
				if _, err := c.read(deadline); err != nil {
					if !errors.Is(err, os.ErrDeadlineExceeded) {
						return
					}
					break
				}
			}
		}
	}()
	s.wakerMu.Lock()
	s.wakerStop = func() { close(done); <-stopped }
	s.wakerMu.Unlock()
}

// Restart stops and starts the server and its services, on the same
// port.
func (s *InspServer) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

// StopServices stops the services (the server stays up) and returns once
// the server no longer offers SASL and NickServ is gone.
func (s *InspServer) StopServices(t testing.TB) {
	t.Helper()
	s.serv.stop()
	if err := s.probeServices(false); err != nil {
		t.Fatalf("ircxtest: %v (logs below)", err)
	}
}

// StartServices starts the services (again) and returns once they are
// linked: the server offers SASL, and NickServ and SaslServ are online.
func (s *InspServer) StartServices(t testing.TB) {
	t.Helper()
	if !s.services {
		t.Fatal("ircxtest: the server was started with NoServices")
	}
	if err := s.serv.start(); err != nil {
		t.Fatalf("ircxtest: %v (logs below)", err)
	}
	if err := s.probeServices(true); err != nil {
		t.Fatalf("ircxtest: %v (logs below)", err)
	}
}

// Log returns what InspIRCd and the services printed and logged.
func (s *InspServer) Log() string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- inspircd output:\n%s", s.ircd.output())
	if log, err := os.ReadFile(filepath.Join(s.dir, "inspircd.log")); err == nil {
		fmt.Fprintf(&b, "--- inspircd.log:\n%s", log)
	}
	if s.services {
		fmt.Fprintf(&b, "--- atheme-services output:\n%s", s.serv.output())
	}
	return b.String()
}

// RegisterAccount registers a services account with NickServ: a client
// connects with the account's name as nick, sends REGISTER with password
// (no spaces, at least 5 characters, not the account name) and
// account@example.com, waits for NickServ's answer and quits. It fails
// the test unless the account was registered.
func (s *InspServer) RegisterAccount(t testing.TB, account, password string) {
	t.Helper()
	if !s.services {
		t.Fatal("ircxtest: RegisterAccount: the server was started with NoServices")
	}
	c, err := s.dialRaw(account)
	if err != nil {
		t.Fatalf("ircxtest: register account %s: %v", account, err)
	}
	defer c.quit()
	// The answer to REGISTER comes before the answer to the unknown
	// command after it: NickServ takes commands in order.
	if err := c.send("PRIVMSG NickServ :REGISTER "+password+" "+account+"@example.com",
		"PRIVMSG NickServ :IRCXTEST-END"); err != nil {
		t.Fatalf("ircxtest: register account %s: %v", account, err)
	}
	var notices []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		m, err := c.read(deadline)
		if err != nil {
			t.Fatalf("ircxtest: register account %s: %v; NickServ said %q", account, err, notices)
		}
		if m.Command != "NOTICE" || m.Prefix == nil || !strings.EqualFold(m.Prefix.Name, "NickServ") {
			continue
		}
		text := m.Trailing()
		if strings.Contains(text, "Invalid command") {
			break
		}
		notices = append(notices, text)
	}
	for _, n := range notices {
		if strings.Contains(n, " is now registered to ") {
			return
		}
	}
	t.Fatalf("ircxtest: register account %s: NickServ said %q", account, notices)
}

// probeServices is waitServices on a new connection.
func (s *InspServer) probeServices(up bool) error {
	c, err := s.dialRaw("")
	if err != nil {
		return fmt.Errorf("wait for the services: %w", err)
	}
	defer c.quit()
	return s.waitServices(c, up)
}

// waitServices waits until the services are linked (SASL offered,
// NickServ and SaslServ online) or, with up false, gone (no SASL, no
// NickServ), as client c sees it.
func (s *InspServer) waitServices(c *rawConn, up bool) error {
	what := "linked"
	if !up {
		what = "gone"
	}
	deadline := time.Now().Add(20 * time.Second)
	// Cap-notify does not tell: InspIRCd 3.15 sends CAP NEW sasl to
	// connected clients only when the services' mechanism list changes,
	// not when the same services link again. So ask, CAP LS and ISON
	// (answered in that order), until the answer is right.
	var nextAsk time.Time
	for {
		if up {
			select {
			case <-s.serv.exitedChan():
				return fmt.Errorf("atheme-services exited before linking")
			default:
			}
		}
		now := time.Now()
		if now.After(deadline) {
			return fmt.Errorf("the services are not %s after 20 s (offered: %v)", what, c.caps)
		}
		if now.After(nextAsk) {
			if err := c.send("CAP LS 302", "ISON NickServ SaslServ"); err != nil {
				return fmt.Errorf("wait for the services to be %s: %w", what, err)
			}
			nextAsk = now.Add(50 * time.Millisecond)
		}
		m, err := c.read(now.Add(50 * time.Millisecond))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for the services to be %s: %w", what, err)
		}
		switch m.Command {
		case "CAP":
			c.capChange(m)
		case "303": // RPL_ISON
			online := strings.Fields(strings.ToLower(m.Trailing()))
			both := slices.Contains(online, "nickserv") && slices.Contains(online, "saslserv")
			sasl := c.lsDone && slices.Contains(c.caps, "sasl")
			if (up && sasl && both) || (!up && !sasl && len(online) == 0) {
				return nil
			}
		}
	}
}

// rawConn is a registered client connection for the harness's own use
// (no testing.TB: it reports errors).
type rawConn struct {
	nc     net.Conn
	r      *bufio.Reader
	caps   []string // offered (CAP LS, NEW, DEL)
	lsDone bool     // the last CAP LS reply is complete
}

var probeSeq struct {
	sync.Mutex
	n int
}

// dialRaw connects as nick ("": a probe nick), with CAP LS 302 and no
// capability requested, and returns after the welcome.
func (s *InspServer) dialRaw(nick string) (*rawConn, error) {
	if nick == "" {
		probeSeq.Lock()
		probeSeq.n++
		nick = "ircxtestprobe" + strconv.Itoa(probeSeq.n)
		probeSeq.Unlock()
	}
	nc, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &rawConn{nc: nc, r: bufio.NewReader(nc)}
	var lines []string
	if s.password != "" {
		lines = append(lines, "PASS :"+s.password)
	}
	lines = append(lines, "CAP LS 302", "NICK "+nick, "USER "+nick+" 0 * :ircxtest "+nick)
	if err := c.send(lines...); err != nil {
		nc.Close()
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A line every 50 ms keeps the server's loop turning, so that it
		// registers us as soon as it would on a busy server (see
		// startWaker); before registration PING only earns a 451.
		m, err := c.read(time.Now().Add(50 * time.Millisecond))
		if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(deadline) {
			if err = c.send("PING :ircxtest"); err == nil {
				continue
			}
		}
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("register as %s: %w", nick, err)
		}
		switch m.Command {
		case "CAP":
			if c.capChange(m) {
				err = c.send("CAP END")
			}
		case "001":
			return c, nil
		case "432", "433", "464", "ERROR":
			err = fmt.Errorf("registration refused: %s", m)
		}
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("register as %s: %w", nick, err)
		}
	}
}

// capChange follows CAP LS, NEW and DEL in c.caps, and reports the end
// of CAP LS.
func (c *rawConn) capChange(m *irc.Message) (lsEnd bool) {
	sub := strings.ToUpper(m.Param(1))
	if sub == "LS" && c.lsDone { // a new LS: the whole list again
		c.caps, c.lsDone = nil, false
	}
	for _, tok := range strings.Fields(m.Trailing()) {
		name, _, _ := strings.Cut(tok, "=")
		switch sub {
		case "LS", "NEW":
			if !slices.Contains(c.caps, name) {
				c.caps = append(c.caps, name)
			}
		case "DEL":
			c.caps = slices.DeleteFunc(c.caps, func(n string) bool { return n == name })
		}
	}
	if sub == "LS" && m.Param(2) != "*" {
		c.lsDone = true
		return true
	}
	return false
}

func (c *rawConn) send(lines ...string) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write([]byte(strings.Join(lines, "\r\n") + "\r\n"))
	return err
}

// read returns the next message until deadline, answering PINGs.
func (c *rawConn) read(deadline time.Time) (*irc.Message, error) {
	_ = c.nc.SetReadDeadline(deadline)
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		m, err := irc.ParseMessage(line)
		if err != nil {
			continue
		}
		if m.Command == "PING" {
			m.Command = "PONG"
			if err := c.send(m.String()); err != nil {
				return nil, err
			}
			continue
		}
		return m, nil
	}
}

func (c *rawConn) quit() {
	_ = c.send("QUIT :done")
	c.nc.Close()
}

// daemon is a server process started by the harness, as nobody when
// root.
type daemon struct {
	name string
	argv []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *bytes.Buffer
}

func (d *daemon) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return fmt.Errorf("%s is running already", d.name)
	}
	cmd := exec.Command(d.argv[0], d.argv[1:]...)
	// Killed with the test binary, even when it dies without cleanup
	// (timeout, SIGPIPE): no daemons left holding ports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		u, err := lookupNobody()
		if err != nil {
			return fmt.Errorf("run %s as nobody: %w", d.name, err)
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}
	}
	if d.out == nil {
		d.out = &bytes.Buffer{}
	}
	w := &lockedWriter{mu: &d.mu, buf: d.out}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	d.cmd, d.exited = cmd, exited
	return nil
}

// exitedChan is closed when the running process exits (nil when none
// runs: never ready).
func (d *daemon) exitedChan() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exited
}

// waitDial waits until addr accepts connections, failing when the process
// exits first.
func (d *daemon) waitDial(addr string) error {
	exited := d.exitedChan()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start", d.name)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not accept connections on %s: %w", d.name, addr, err)
		}
	}
}

// stop stops the process (SIGTERM, then SIGKILL after 5 s) and waits for
// it to exit.
func (d *daemon) stop() {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.cmd, d.exited = nil, nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (d *daemon) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.out == nil {
		return ""
	}
	return d.out.String()
}
