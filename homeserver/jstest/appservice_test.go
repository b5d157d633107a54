package jstest

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"testing"

	"maunium.net/go/mautrix/appservice"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/loopback"
	"github.com/switchboard-im/switchboard/internal/testdb"
	"github.com/switchboard-im/switchboard/internal/testpeer"
)

// TestAppservice: an appservice written with matrix-bot-sdk (the npm
// library many JavaScript bridges and bots use) works against the
// homeserver as it is: the homeserver loads its registration file, asks it
// about a ghost in its exclusive namespace (the appservice registers the
// ghost with m.login.application_service), pushes it transactions, and the
// ghost joins a user's room and replies, which the user, on matrix-js-sdk,
// sees through /sync. See tests/js/appservice.test.mjs.
func TestAppservice(t *testing.T) {
	requireNode(t)
	requireNodePackage(t, "matrix-bot-sdk")
	testdb.ForEach(t, func(t *testing.T, uri string) {
		// The appservice (node) listens here; the homeserver pushes to it.
		addr, err := loopback.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		reg := appservice.CreateRegistration() // random as_token and hs_token
		reg.ID = "jsbot"
		reg.URL = "http://" + addr
		reg.SenderLocalpart = "jsbot"
		reg.Namespaces.UserIDs.Register(regexp.MustCompile(`@jsbot_.*`), true)
		path := filepath.Join(t.TempDir(), "jsbot.yaml")
		if err := reg.Save(path); err != nil {
			t.Fatalf("write registration: %v", err)
		}

		srv := hstest.Start(t, uri, func(cfg *config.Config) {
			cfg.AppserviceRegistrations = append(cfg.AppserviceRegistrations, path)
		})
		if srv.HS.Appservices().ByID(reg.ID) == nil {
			t.Fatalf("the homeserver did not load %s", path)
		}
		defer func() {
			if t.Failed() {
				// Why transactions did not arrive, as the pusher saw it.
				for _, s := range srv.HS.Pusher.Stats() {
					t.Logf("appservice %s: state %s, %d transactions (%d events) sent, %d failed; last error: %q",
						s.ID, s.State, s.Transactions, s.Events, s.TotalFailures, s.LastError)
				}
			}
		}()

		// The appservice reads its registration as JSON (bot-sdk takes an
		// object; there is no YAML parser among the test's packages).
		regJSON, err := json.Marshal(reg)
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("AS_REGISTRATION", string(regJSON))
		runNodeTest(t, srv, "appservice.test.mjs", newTestUser(srv, "alice"))
	})
}

// requireNodePackage skips the test, or fails it under CI=true, when the
// npm package name is not installed in tests/js at the version
// package.json pins (requireNode checks matrix-js-sdk only).
func requireNodePackage(t *testing.T, name string) {
	t.Helper()
	problem := func() string {
		dir := jsDir()
		var pkg struct {
			Dependencies map[string]string `json:"dependencies"`
		}
		if err := readJSON(filepath.Join(dir, "package.json"), &pkg); err != nil {
			return fmt.Sprintf("tests/js/package.json: %v", err)
		}
		want := pkg.Dependencies[name]
		if want == "" {
			return fmt.Sprintf("tests/js/package.json does not list %s", name)
		}
		var installed struct {
			Version string `json:"version"`
		}
		if err := readJSON(filepath.Join(dir, "node_modules", name, "package.json"), &installed); err != nil {
			return fmt.Sprintf("%s is not installed in %s (run `%s`)", name, dir, installHint)
		}
		if installed.Version != want {
			return fmt.Sprintf("tests/js/node_modules has %s %s but package.json pins %s (run `%s`)",
				name, installed.Version, want, installHint)
		}
		return ""
	}()
	if problem != "" {
		testpeer.Missing(t, problem)
	}
}
