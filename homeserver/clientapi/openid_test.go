package clientapi_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// federationTo returns mautrix's federation client with its server
// resolution (well-known, SRV, port 8448, TLS) replaced by the test
// server's loopback address: what a third-party service would call.
func federationTo(srv *hstest.Server) *federation.Client {
	addr := strings.TrimPrefix(srv.URL, "http://")
	return &federation.Client{
		HTTP: &http.Client{Timeout: 30 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.URL.Scheme, r.URL.Host, r.Host = "http", addr, addr
			return http.DefaultTransport.RoundTrip(r)
		})},
		UserAgent:         "switchboard-test",
		ResponseSizeLimit: mautrix.DefaultResponseSizeLimit,
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A user gets an OpenID token for themselves only; a third party exchanges
// it for the user's ID, through any process sharing the database; unknown
// and expired tokens are refused, and the token is no access token.
func TestOpenID(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		key := t.TempDir() + "/signing.key"
		sameKey := func(c *config.Config) { c.SigningKeyPath = key }
		srv := hstest.Start(t, uri, sameKey)
		alice, bob := srv.NewUser("alice"), srv.NewUser("bob")

		tok, err := alice.RequestOpenIDToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tok.TokenType != "Bearer" || tok.MatrixServerName != srv.Config.ServerName || tok.ExpiresIn != 3600 || len(tok.AccessToken) < 22 {
			t.Fatalf("token response %+v", tok)
		}
		fed := federationTo(srv)
		info, err := fed.GetOpenIDUserInfo(ctx, tok.MatrixServerName, tok.AccessToken)
		if err != nil || info.Sub != alice.UserID {
			t.Fatalf("userinfo = %+v, %v; want sub %s", info, err, alice.UserID)
		}
		// Another process on the same database knows the token.
		other := hstest.Start(t, uri, sameKey)
		if info, err := federationTo(other).GetOpenIDUserInfo(ctx, tok.MatrixServerName, tok.AccessToken); err != nil || info.Sub != alice.UserID {
			t.Fatalf("userinfo through another process = %+v, %v", info, err)
		}

		_, err = fed.GetOpenIDUserInfo(ctx, srv.Config.ServerName, "sboi_not_a_real_token")
		mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)
		_, err = fed.GetOpenIDUserInfo(ctx, srv.Config.ServerName, "")
		mustErr(t, err, mautrix.MMissingToken, http.StatusUnauthorized)

		// Only for the caller's own user ID.
		impostor := srv.Client()
		impostor.SetCredentials(bob.UserID, alice.AccessToken)
		_, err = impostor.RequestOpenIDToken(ctx)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)

		// An OpenID token is good for userinfo only.
		asClient := srv.Client()
		asClient.SetCredentials(alice.UserID, tok.AccessToken)
		_, err = asClient.Whoami(ctx)
		mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)

		// Expired tokens are refused, and pruned when the next is issued.
		const expired = "sboi_expired_token_0123456789"
		past := time.Now().Add(-time.Minute).UnixMilli()
		if err := srv.HS.DB.InsertOpenIDToken(ctx, accounts.HashToken(expired), bob.UserID, past); err != nil {
			t.Fatal(err)
		}
		_, err = fed.GetOpenIDUserInfo(ctx, srv.Config.ServerName, expired)
		mustErr(t, err, mautrix.MUnknownToken, http.StatusUnauthorized)
		if _, err := bob.RequestOpenIDToken(ctx); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := srv.HS.DB.QueryRow(ctx, `SELECT COUNT(*) FROM openid_tokens WHERE expires_ts <= $1`, time.Now().UnixMilli()).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d expired tokens left after issuing another (%v)", n, err)
		}
	})
}
