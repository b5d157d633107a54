package testkit

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	hsappservice "github.com/switchboard-im/switchboard/homeserver/appservice"
)

// NewRegistration returns a registration for an appservice with the given
// id whose users are @{userPrefix}…:{server name} (exclusively) and whose
// aliases are #{userPrefix}…; its bot is @{userPrefix}bot. userPrefix
// follows the spec's advice of a distinct prefix per appservice, such as
// "_irc_". The tokens are fresh random strings (64 base62 characters, ≥ 128
// bits, from crypto/rand). Rate limits are off, so a test may send as fast
// as a busy bridge. URL is empty: set it once the appservice listens (see
// ListenAppservice), then call RegisterAppservice.
func (k *Kit) NewRegistration(asID, userPrefix string) *appservice.Registration {
	k.t.Helper()
	if userPrefix == "" {
		k.t.Fatalf("testkit: NewRegistration(%q): an empty user prefix would claim every user", asID)
	}
	sender := userPrefix + "bot"
	if err := id.ValidateUserLocalpart(sender); err != nil {
		k.t.Fatalf("testkit: NewRegistration(%q): user prefix %q gives the invalid bot localpart %q: %v", asID, userPrefix, sender, err)
	}
	reg := appservice.CreateRegistration() // random as_token and hs_token
	reg.ID = asID
	reg.SenderLocalpart = sender
	rateLimited := false
	reg.RateLimited = &rateLimited
	server := regexp.QuoteMeta(k.ServerName)
	reg.Namespaces.UserIDs.Register(regexp.MustCompile("^@"+regexp.QuoteMeta(userPrefix)+".*:"+server+"$"), true)
	reg.Namespaces.RoomAliases.Register(regexp.MustCompile("^#"+regexp.QuoteMeta(userPrefix)+".*:"+server+"$"), true)
	return reg
}

// RegisterAppservice installs the registration as an operator would: it
// writes it as a registration file, lists it in the homeserver's
// appservice_registrations and reloads the registrations (as SIGHUP does).
// The homeserver validates it as it would any file, and creates the bot
// user. When RegisterAppservice returns, events from then on that the
// appservice is interested in are sent to reg.URL.
//
// Registering an id again replaces that registration, for example with the
// new URL of an appservice that restarted on another port; its queue of
// undelivered events is kept.
func (k *Kit) RegisterAppservice(reg *appservice.Registration) {
	k.t.Helper()
	if reg == nil {
		k.t.Fatalf("testkit: RegisterAppservice(nil)")
	}
	data, err := reg.YAML()
	if err != nil {
		k.t.Fatalf("testkit: registration %q: %v", reg.ID, err)
	}
	dir := filepath.Join(k.HS.Config.DataDir, hsappservice.Dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		k.t.Fatalf("testkit: %v", err)
	}
	path := filepath.Join(dir, fileSafe(reg.ID)+".yaml")
	previous, err := os.ReadFile(path)
	known := err == nil
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		k.t.Fatalf("testkit: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.HS.HS.ReloadAppservices(ctx); err != nil {
		// The homeserver kept the previous registrations; so does the
		// data directory, or the next Restart would fail on this file.
		if known {
			err = errors.Join(err, os.WriteFile(path, previous, 0o600))
		} else {
			err = errors.Join(err, os.Remove(path))
		}
		k.t.Fatalf("testkit: register appservice %q: %v", reg.ID, err)
	}
}

// fileSafe makes a registration id usable in a file name, for the
// homeserver's error messages, which name the file.
func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// ListenAppservice opens a listener on a free loopback port for the
// appservice's HTTP server and returns it with the URL to put in the
// registration. Handing over the open listener, rather than a port number
// to bind later, leaves no moment in which another test could take the
// port. It is closed when the test ends.
func (k *Kit) ListenAppservice() (url string, ln net.Listener) {
	k.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		k.t.Fatalf("testkit: listen for the appservice: %v", err)
	}
	k.t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String(), ln
}
