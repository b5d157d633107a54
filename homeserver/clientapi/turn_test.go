package clientapi_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/loopback"
	"github.com/switchboard-im/switchboard/internal/testdb"
	"github.com/switchboard-im/switchboard/internal/testpeer"
)

// TestTurnConfig: every bad value in the turn section is refused naming
// its key, good URIs are accepted (and read the same by pion's parser), the
// defaults offer no TURN, the section survives the generated file, and
// the secrets may come from the environment.
func TestTurnConfig(t *testing.T) {
	const secret = "0123456789abcdef0123"
	withSecret := func(uris string) string { return "turn: {uris: " + uris + ", shared_secret: " + secret + "}" }
	for _, tc := range []struct{ yaml, key string }{
		{withSecret("['http://turn.example.org']"), "turn.uris[0]"},
		{withSecret("['turn://turn.example.org:3478']"), "turn.uris[0]"},
		{withSecret("['turn:']"), "turn.uris[0]"},
		{withSecret("['turn:turn.example.org:99999']"), "turn.uris[0]"},
		{withSecret("['turn:turn.example.org:+80']"), "turn.uris[0]"},
		{withSecret("['turn:bad host:3478']"), "turn.uris[0]"},
		{withSecret("['turn:[::1:3478']"), "turn.uris[0]"},
		{withSecret("['turn:user@turn.example.org']"), "turn.uris[0]"},
		{withSecret("['turn:t.example.org', 'turn:t.example.org?transport=sctp']"), "turn.uris[1]"},
		{withSecret("['turn:t.example.org?transport=udp&x=1']"), "turn.uris[0]"},
		{withSecret("'turn:t.example.org'"), "turn.uris (line 1): expected a list"},
		{"turn: {uris: ['turn:t.example.org'], shared_secret: " + secret + ", username: u, password: p}", "turn.shared_secret"},
		{"turn: {uris: ['turn:t.example.org'], shared_secret: short}", "turn.shared_secret"},
		{"turn: {uris: ['turn:t.example.org'], username: u}", "turn.password"},
		{"turn: {uris: ['turn:t.example.org'], password: p}", "turn.username"},
		{"turn: {uris: ['turn:t.example.org']}", "turn.uris"},
		{"turn: {shared_secret: " + secret + "}", "turn.uris"},
		{"turn: {uris: ['turn:t.example.org'], shared_secret: " + secret + ", user_lifetime: 0s}", "turn.user_lifetime"},
		{"turn: {uris: ['turn:t.example.org'], shared_secret: " + secret + ", user_lifetime: 500ms}", "turn.user_lifetime"},
		{"turn:\n  user_lifetime: soon", "turn.user_lifetime (line 2): invalid duration"},
		{"turn:\n  allow_guests: maybe", "turn.allow_guests (line 2)"},
		{"turn: {static_auth_secret: x}", `unknown key "static_auth_secret"`},
	} {
		if _, err := config.Parse([]byte(tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: want an error naming %s, got %v", tc.yaml, tc.key, err)
		}
	}

	for _, uri := range []string{
		"turn:turn.example.org",
		"turn:turn.example.org:3478?transport=udp",
		"TURN:turn.example.org:3478?transport=tcp",
		"turns:turn.example.org:5349?transport=tcp",
		"turn:192.0.2.1:3478",
		"turn:[2001:db8::1]:3478?transport=udp",
	} {
		if _, err := config.Parse([]byte(withSecret("['" + uri + "']"))); err != nil {
			t.Errorf("%s: %v", uri, err)
		}
		if _, err := stun.ParseURI(strings.ToLower(uri[:5]) + uri[5:]); err != nil {
			t.Errorf("%s: accepted, but pion cannot parse it: %v", uri, err)
		}
	}

	cfg, err := config.Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := config.TURNConfig{UserLifetime: config.Duration(time.Hour), AllowGuests: true}
	if !reflect.DeepEqual(cfg.TURN, want) {
		t.Fatalf("defaults: %+v, want %+v", cfg.TURN, want)
	}
	for _, turnCfg := range []config.TURNConfig{
		{URIs: []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"},
			SharedSecret: secret, UserLifetime: config.Duration(90 * time.Minute)},
		{URIs: []string{"turn:[2001:db8::1]"}, Username: "calls", Password: "pa\"ss word",
			UserLifetime: config.Duration(time.Hour), AllowGuests: true},
	} {
		cfg.TURN = turnCfg
		data, err := cfg.Render()
		if err != nil {
			t.Fatal(err)
		}
		back, err := config.Parse(data)
		if err != nil || !reflect.DeepEqual(back.TURN, turnCfg) {
			t.Fatalf("turn section after the round trip: %+v, %v\n%s", back.TURN, err, data)
		}
	}

	t.Setenv(config.EnvTURNSharedSecret, "from-the-environment-0123456789")
	cfg, err = config.Parse([]byte("turn: {uris: ['turn:t.example.org'], shared_secret: from-the-file-0123456789}"))
	if err != nil || cfg.TURN.SharedSecret != "from-the-environment-0123456789" {
		t.Fatalf("%s not applied: %+v, %v", config.EnvTURNSharedSecret, cfg.TURN, err)
	}
	// Validated like the key it replaces.
	_, err = config.Parse([]byte("turn: {uris: ['turn:t.example.org'], username: u, password: p}"))
	if err == nil || !strings.Contains(err.Error(), "turn.shared_secret") {
		t.Fatalf("%s with fixed credentials: %v", config.EnvTURNSharedSecret, err)
	}
	t.Setenv(config.EnvTURNSharedSecret, "")
	t.Setenv(config.EnvTURNPassword, "password-from-the-environment")
	cfg, err = config.Parse([]byte("turn: {uris: ['turn:t.example.org'], username: u, password: p}"))
	if err != nil || cfg.TURN.Password != "password-from-the-environment" {
		t.Fatalf("%s not applied: %+v, %v", config.EnvTURNPassword, cfg.TURN, err)
	}
}

// TestTurnServerUnconfigured: without turn.uris a client gets an empty
// object (not an error, and not an empty uris list, which browsers refuse).
func TestTurnServerUnconfigured(t *testing.T) {
	srv := hstest.Start(t, testdb.SQLiteURI(t), nil)
	alice := srv.NewUser("alice")
	var body map[string]any
	if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "voip", "turnServer"), nil, &body); err != nil {
		t.Fatal(err)
	}
	if len(body) != 0 {
		t.Fatalf("turnServer without TURN: %v, want {}", body)
	}
	if resp, err := alice.TurnServer(ctx); err != nil || len(resp.URIs) != 0 || resp.Username != "" {
		t.Fatalf("TurnServer: %+v, %v", resp, err)
	}
}

// TestTurnServerCoturn: with coturn's shared secret, a user's credentials
// from /voip/turnServer allocate a relay on a real coturn through every URI
// given, and media flows through it to a peer and back. Credentials
// altered in any part (password, user, expiry) are refused with 401, and so
// are the user's own once they expire.
func TestTurnServerCoturn(t *testing.T) {
	secret := config.RandomSecret(32)
	ct := startCoturn(t, "use-auth-secret", "static-auth-secret="+secret)
	uris := []string{"turn:" + ct.addr + "?transport=udp", "turn:" + ct.addr + "?transport=tcp"}
	srv := hstest.Start(t, testdb.SQLiteURI(t), func(cfg *config.Config) {
		cfg.TURN.URIs = uris
		cfg.TURN.SharedSecret = secret
	})
	alice := srv.NewUser("alice")

	before := time.Now().Unix()
	creds, err := alice.TurnServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expiry, user, _ := strings.Cut(creds.Username, ":")
	if exp, err := strconv.ParseInt(expiry, 10, 64); err != nil || exp < before+3600 || exp > time.Now().Unix()+3600 ||
		user != alice.UserID.String() || creds.TTL != 3600 || !reflect.DeepEqual(creds.URIs, uris) || creds.Password == "" {
		t.Fatalf("credentials: %+v, want username EXPIRY:%s expiring in 1h, ttl 3600, uris %v", creds, alice.UserID, uris)
	}

	for _, uri := range creds.URIs {
		t.Run(uri, func(t *testing.T) {
			relay, err := turnAllocate(t, uri, creds)
			if err != nil {
				t.Fatalf("allocate with the server's credentials: %v\ncoturn log:\n%s", err, ct.log())
			}
			relayEcho(t, relay)
		})
	}

	bob := srv.NewUser("bob")
	tamperedPassword := []byte(creds.Password)
	tamperedPassword[3] ^= 1
	for name, forged := range map[string]*mautrix.RespTurnServer{
		"tampered password":          {Username: creds.Username, Password: string(tamperedPassword)},
		"another user's name":        {Username: expiry + ":" + bob.UserID.String(), Password: creds.Password},
		"a later expiry":             {Username: "9" + creds.Username, Password: creds.Password},
		"the name without an expiry": {Username: user, Password: creds.Password},
	} {
		if _, err := turnAllocate(t, uris[0], forged); !isUnauthorized(err) {
			t.Errorf("%s: allocate gave %v, want 401 Unauthorized", name, err)
		}
	}

	// Short-lived credentials work at once and are refused by coturn once
	// their expiry second has passed.
	short := hstest.Start(t, testdb.SQLiteURI(t), func(cfg *config.Config) {
		cfg.TURN.URIs = uris
		cfg.TURN.SharedSecret = secret
		cfg.TURN.UserLifetime = config.Duration(2 * time.Second)
	})
	carol := short.NewUser("carol")
	creds, err = carol.TurnServer(ctx)
	if err != nil || creds.TTL != 2 {
		t.Fatalf("short-lived credentials: %+v, %v", creds, err)
	}
	if _, err := turnAllocate(t, uris[0], creds); err != nil {
		t.Fatalf("allocate with fresh short-lived credentials: %v\ncoturn log:\n%s", err, ct.log())
	}
	expiry, _, _ = strings.Cut(creds.Username, ":")
	exp, _ := strconv.ParseInt(expiry, 10, 64)
	// coturn reads a clock it updates once a second, so it may take a
	// second past the expiry to see it.
	time.Sleep(time.Until(time.Unix(exp+1, 0)))
	for deadline := time.Unix(exp+5, 0); ; time.Sleep(250 * time.Millisecond) {
		_, err := turnAllocate(t, uris[0], creds)
		if isUnauthorized(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("allocate with credentials that expired at %d, at %d: %v, want 401 Unauthorized\ncoturn log:\n%s",
				exp, time.Now().Unix(), err, ct.log())
		}
	}
}

// TestTurnServerStaticCredentials: fixed turn.username and turn.password
// are handed to every user as they are, and coturn (with a long-term user
// of that name) relays for them.
func TestTurnServerStaticCredentials(t *testing.T) {
	ct := startCoturn(t, "lt-cred-mech", "user=switchboard:static-password-0123")
	uri := "turn:" + ct.addr + "?transport=udp"
	srv := hstest.Start(t, testdb.SQLiteURI(t), func(cfg *config.Config) {
		cfg.TURN.URIs = []string{uri}
		cfg.TURN.Username = "switchboard"
		cfg.TURN.Password = "static-password-0123"
	})
	for _, name := range []string{"alice", "bob"} {
		creds, err := srv.NewUser(name).TurnServer(ctx)
		want := &mautrix.RespTurnServer{Username: "switchboard", Password: "static-password-0123", TTL: 3600, URIs: []string{uri}}
		if err != nil || !reflect.DeepEqual(creds, want) {
			t.Fatalf("%s's credentials: %+v, %v; want %+v", name, creds, err, want)
		}
		relay, err := turnAllocate(t, uri, creds)
		if err != nil {
			t.Fatalf("allocate: %v\ncoturn log:\n%s", err, ct.log())
		}
		relayEcho(t, relay)
	}
}

// turnAllocate connects to the TURN server at uri as a WebRTC client would
// (UDP, or TCP for ?transport=tcp) and asks for a UDP relay with creds.
// The client is closed when the test ends.
func turnAllocate(t *testing.T, uri string, creds *mautrix.RespTurnServer) (net.PacketConn, error) {
	t.Helper()
	u, err := stun.ParseURI(uri)
	if err != nil {
		t.Fatalf("%s: %v", uri, err)
	}
	addr := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
	var conn net.PacketConn
	if u.Proto == stun.ProtoTypeTCP {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	} else if conn, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: addr,
		Username:       creds.Username,
		Password:       creds.Password,
		Conn:           conn,
	})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		conn.Close()
	})
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	return client.Allocate()
}

// isUnauthorized reports whether err is the TURN server's 401 answer to
// an Allocate request (pion: "… (error 401: Unauthorized)").
func isUnauthorized(err error) bool {
	return err != nil && strings.Contains(err.Error(), "error 401")
}

// relayEcho sends a datagram from the relay to a peer on loopback, which
// sees it come from the relayed address and answers through the relay.
func relayEcho(t *testing.T, relay net.PacketConn) {
	t.Helper()
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	deadline := time.Now().Add(10 * time.Second)
	_ = peer.SetReadDeadline(deadline)
	_ = relay.SetReadDeadline(deadline)

	// Longer than 4 bytes: pion's TCP framing holds back a ChannelData
	// frame shorter than 9 bytes until more arrives.
	ping, pong := "ping through the relay", "pong from the peer"
	if _, err := relay.WriteTo([]byte(ping), peer.LocalAddr()); err != nil {
		t.Fatalf("send through the relay: %v", err)
	}
	buf := make([]byte, 64)
	n, from, err := peer.ReadFrom(buf)
	if err != nil || string(buf[:n]) != ping || from.String() != relay.LocalAddr().String() {
		t.Fatalf("peer got %q from %v (%v), want %q from the relayed address %v", buf[:n], from, err, ping, relay.LocalAddr())
	}
	if _, err := peer.WriteTo([]byte(pong), from); err != nil {
		t.Fatal(err)
	}
	n, from, err = relay.ReadFrom(buf)
	if err != nil || string(buf[:n]) != pong || from.String() != peer.LocalAddr().String() {
		t.Fatalf("relay got %q from %v (%v), want %q from the peer %v", buf[:n], from, err, pong, peer.LocalAddr())
	}
}

// turnserverBinary is coturn's server, from the Debian package coturn.
const turnserverBinary = "/usr/bin/turnserver"

// coturnServer is a real coturn started by a test.
type coturnServer struct {
	addr    string // 127.0.0.1:PORT, UDP and TCP
	logFile string
}

func (s *coturnServer) log() string {
	data, _ := os.ReadFile(s.logFile)
	return string(data)
}

// startCoturn starts turnserver on a free loopback port (UDP and TCP, no
// TLS) with auth as its authentication lines, relaying on 127.0.0.1 to
// loopback peers. It is killed when the test ends. Without the binary the
// test is skipped, or fails when CI=true.
func startCoturn(t *testing.T, auth ...string) *coturnServer {
	t.Helper()
	testpeer.RequireBinary(t, turnserverBinary, "coturn")
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := freeUDPAndTCPPort(t)
		s := &coturnServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), logFile: filepath.Join(dir, fmt.Sprintf("turnserver-%d.log", attempt))}
		conf := strings.Join(append([]string{
			"listening-ip=127.0.0.1",
			"relay-ip=127.0.0.1",
			"listening-port=" + strconv.Itoa(port),
			"realm=switchboard.test",
			"fingerprint",
			"no-tls",
			"no-dtls",
			"no-cli",
			"no-rfc5780",
			"no-software-attribute",
			"allow-loopback-peers",
			"userdb=" + filepath.Join(dir, "turndb"),
			"pidfile=" + filepath.Join(dir, "turnserver.pid"),
			"log-file=" + s.logFile,
			"simple-log",
			"no-stdout-log",
			"verbose",
		}, auth...), "\n") + "\n"
		confFile := filepath.Join(dir, "turnserver.conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(turnserverBinary, "-c", confFile)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", turnserverBinary, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		if lastErr = waitCoturn(s.addr, exited); lastErr == nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("coturn log:\n%s", s.log())
				}
			})
			return s
		}
		stop()
		lastErr = fmt.Errorf("%w; its log:\n%s", lastErr, s.log())
	}
	t.Fatalf("coturn did not start: %v", lastErr)
	return nil
}

// waitCoturn waits until coturn answers a STUN binding request on UDP and
// accepts TCP connections at addr.
func waitCoturn(addr string, exited <-chan error) error {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer conn.Close()
	server, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return err
	}
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	buf := make([]byte, 1500)
	var udpOK bool
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-exited:
			return fmt.Errorf("turnserver exited: %v", err)
		default:
		}
		if !udpOK {
			if _, err := conn.WriteTo(req.Raw, server); err != nil {
				return err
			}
			_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, _, err := conn.ReadFrom(buf); err == nil {
				res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
				udpOK = res.Decode() == nil && res.TransactionID == req.TransactionID && res.Type == stun.BindingSuccess
			}
			continue
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("turnserver did not answer on " + addr + " within 15s")
}

// freeUDPAndTCPPort returns a loopback port that was free a moment ago for
// both TCP and UDP (coturn listens on both).
func freeUDPAndTCPPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		port, err := loopback.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if c, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			c.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both TCP and UDP")
	return 0
}
