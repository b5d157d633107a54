package clientapi_test

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// Rate limits on login and registration, configured small so that a test
// can hit them: a password guesser is slowed per account whichever address
// it comes from, a flood from one address is slowed per address, and every
// refusal is 429 M_LIMIT_EXCEEDED with retry_after_ms and Retry-After.
//
// The limits are per client IP, so the clients connect from different
// loopback addresses (Linux routes all of 127.0.0.0/8 to lo).

func rlConfig(c *config.Config) {
	c.Registration.Mode = config.RegistrationOpen
	c.RateLimits.Login = config.RateLimit{PerSecond: 0.5, Burst: 3}
	c.RateLimits.FailedLogin = config.RateLimit{PerSecond: 0.1, Burst: 2}
	c.RateLimits.Register = config.RateLimit{PerSecond: 0.5, Burst: 2}
}

// rlClient returns a mautrix client whose connections come from ip, with
// mautrix's automatic retry (which sleeps on 429) turned off.
func rlClient(t *testing.T, srv *hstest.Server, ip string) *mautrix.Client {
	t.Helper()
	cli := srv.Client()
	cli.DefaultHTTPRetries = 0
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	cli.Client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: dialer.DialContext}}
	return cli
}

func rlRequireLoopbackAliases(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.77:0")
	if err != nil {
		t.Fatalf("these tests need connections from several loopback addresses (127.0.0.x), as Linux provides: %v", err)
	}
	ln.Close()
}

// rlCheckLimited asserts a 429 M_LIMIT_EXCEEDED with an integer
// retry_after_ms in (0, max] and a matching Retry-After header, and
// returns the wait.
func rlCheckLimited(t *testing.T, err error, max time.Duration) time.Duration {
	t.Helper()
	if !errors.Is(err, mautrix.MLimitExceeded) {
		t.Fatalf("want M_LIMIT_EXCEEDED, got %v", err)
	}
	r := biFromMautrix(t, err, nil)
	obj := biCheckError(t, r, mautrix.MLimitExceeded, http.StatusTooManyRequests)
	ms, ok := obj["retry_after_ms"].(float64)
	if !ok || ms != math.Trunc(ms) || ms <= 0 || ms > float64(max.Milliseconds()) {
		t.Errorf("retry_after_ms = %#v, want an integer in (0, %d]", obj["retry_after_ms"], max.Milliseconds())
	}
	header := r.header.Get("Retry-After")
	secs, err := strconv.Atoi(header)
	if err != nil || secs < 1 || secs != int(math.Ceil(ms/1000)) {
		t.Errorf("Retry-After = %q, want whole seconds matching retry_after_ms %v", header, ms)
	}
	return time.Duration(ms) * time.Millisecond
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	rlRequireLoopbackAliases(t)
	testdb.ForEach(t, func(t *testing.T, uri string) {
		t.Parallel() // the subtests mostly wait for buckets to refill
		srv := hstest.Start(t, uri, rlConfig)
		srv.CreateUser("victim", biPassword, false)
		srv.CreateUser("bystander", biPassword, false)
		srv.CreateUser("ipuser", biPassword, false)

		// (a) Wrong passwords for one account, each from a new address.
		t.Run("failed logins per account", func(t *testing.T) {
			t.Parallel()
			attempt := 0
			login := func(user, password string) error {
				attempt++
				cli := rlClient(t, srv, fmt.Sprintf("127.0.1.%d", attempt))
				_, err := cli.Login(t.Context(), biLoginReq(user, password))
				return err
			}
			// The owner is logged in somewhere already.
			owner := rlClient(t, srv, "127.0.1.200")
			if _, err := owner.Login(t.Context(), &mautrix.ReqLogin{
				Type:             mautrix.AuthTypePassword,
				Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "victim"},
				Password:         biPassword,
				StoreCredentials: true,
			}); err != nil {
				t.Fatalf("owner's login: %v", err)
			}
			for i := range 2 {
				if err := login("victim", "guess"+strconv.Itoa(i)); !errors.Is(err, mautrix.MForbidden) {
					t.Fatalf("wrong password #%d: want M_FORBIDDEN, got %v", i+1, err)
				}
			}
			wait := rlCheckLimited(t, login("victim", "guess3"), 10*time.Second)
			// The account is locked for now, even for the right password
			// from yet another address…
			rlCheckLimited(t, login("victim", biPassword), 10*time.Second)
			rlCheckLimited(t, login("@victim:localhost", biPassword), 10*time.Second)
			// …and the password stage of user-interactive auth is no way
			// around the lock.
			_, err := owner.MakeRequest(t.Context(), http.MethodDelete, owner.BuildClientURL("v3", "devices", owner.DeviceID), map[string]any{
				"auth": map[string]any{"type": "m.login.password", "password": biPassword,
					"identifier": map[string]any{"type": "m.id.user", "user": "victim"}},
			}, nil)
			rlCheckLimited(t, err, 10*time.Second)
			// …but other accounts are not.
			if err := login("bystander", biPassword); err != nil {
				t.Fatalf("another account's login was refused: %v", err)
			}
			// Once the bucket has refilled, the owner gets in.
			time.Sleep(wait + 200*time.Millisecond)
			if err := login("victim", biPassword); err != nil {
				t.Fatalf("login after retry_after_ms: %v", err)
			}
		})

		// (b) Logins from one address, whatever the account.
		t.Run("logins per address", func(t *testing.T) {
			t.Parallel()
			cli := rlClient(t, srv, "127.0.2.1")
			for i := range 3 {
				if _, err := cli.Login(t.Context(), biLoginReq("ipuser", biPassword)); err != nil {
					t.Fatalf("login #%d: %v", i+1, err)
				}
			}
			_, err := cli.Login(t.Context(), biLoginReq("ipuser", biPassword))
			wait := rlCheckLimited(t, err, 2*time.Second)
			// The limit is per address: another client is unaffected.
			if _, err := rlClient(t, srv, "127.0.2.2").Login(t.Context(), biLoginReq("ipuser", biPassword)); err != nil {
				t.Fatalf("login from another address: %v", err)
			}
			time.Sleep(wait + 200*time.Millisecond)
			if _, err := cli.Login(t.Context(), biLoginReq("ipuser", biPassword)); err != nil {
				t.Fatalf("login after retry_after_ms: %v", err)
			}
		})

		// (c) /register requests from one address (each UIA round trip
		// is one request).
		t.Run("register per address", func(t *testing.T) {
			t.Parallel()
			cli := rlClient(t, srv, "127.0.3.1")
			req := &mautrix.ReqRegister[any]{Username: "newbie", Password: biPassword}
			for i := range 2 {
				_, uia, err := cli.Register(t.Context(), req)
				if uia == nil {
					t.Fatalf("register request #%d: want the UIA flows, got %v", i+1, err)
				}
			}
			_, _, err := cli.Register(t.Context(), req)
			wait := rlCheckLimited(t, err, 2*time.Second)
			// Another address registers fine.
			resp, err := rlClient(t, srv, "127.0.3.2").RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{Username: "otherbie", Password: biPassword})
			if err != nil || resp.UserID != "@otherbie:localhost" {
				t.Fatalf("register from another address = %+v, %v", resp, err)
			}
			time.Sleep(wait + 200*time.Millisecond)
			if _, uia, err := cli.Register(t.Context(), req); uia == nil {
				t.Fatalf("register after retry_after_ms: want the UIA flows, got %v", err)
			}
		})
	})
}
