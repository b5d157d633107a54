// Package jstest runs the JavaScript end-to-end tests in tests/js: the real
// matrix-js-sdk from npm, driven by node's built-in test runner, against a
// real Switchboard homeserver on SQLite and PostgreSQL. Element and most
// web clients are built on matrix-js-sdk, so these tests catch what a
// mautrix-go client forgives: response shapes, error codes and the order of
// calls the SDK's own sync loop makes.
//
// The package has only tests. It needs node (>= 20) and the npm packages in
// tests/js (`cd tests/js && npm ci`, done by scripts/install-test-deps.sh);
// without them the tests skip, or fail under CI=true.
package jstest

import (
	"testing"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// TestAuth: password login, whoami, devices, profile, logout and login
// errors as a matrix-js-sdk user sees them.
func TestAuth(t *testing.T) {
	requireNode(t)
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		runNodeTest(t, srv, "auth.test.mjs", newTestUser(srv, "alice"), newTestUser(srv, "bob"))
	})
}

// TestMessaging: two users create a room, invite, join and talk, each
// hearing the other through the SDK's own /sync loop (startClient).
func TestMessaging(t *testing.T) {
	requireNode(t)
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		runNodeTest(t, srv, "messaging.test.mjs", newTestUser(srv, "alice"), newTestUser(srv, "bob"))
	})
}

// TestEphemeral: typing notifications, read receipts, unread counts and the
// fully-read marker, as the SDK's own sync loop sees them.
func TestEphemeral(t *testing.T) {
	requireNode(t)
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		runNodeTest(t, srv, "ephemeral.test.mjs", newTestUser(srv, "alice"), newTestUser(srv, "bob"))
	})
}

// TestE2EE: matrix-js-sdk with Rust crypto (the WASM build Element uses).
// Two users bootstrap cross-signing, share an encrypted room and decrypt
// each other's messages; one backs her room keys up on the server.
func TestE2EE(t *testing.T) {
	requireNode(t)
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		runNodeTest(t, srv, "e2ee.test.mjs", newTestUser(srv, "alice"), newTestUser(srv, "bob"))
	})
}
