package framework

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// ProvisioningAuth authenticates the callers of a provisioning API (the
// HTTP API an integration manager calls to set up bridges and webhooks for
// its users). A caller sends "Authorization: Bearer <token>", either
//   - the shared secret, acting for the user named by ?user_id=, or
//   - an OpenID token of the user (POST /_matrix/client/v3/user/{userId}/openid/request_token),
//     which is checked with the user's homeserver (server-server API
//     /_matrix/federation/v1/openid/userinfo); ?user_id=, if given, names
//     the user, and so the server to ask (default: our homeserver).
//
// The secret is compared in constant time; a token's owner is remembered
// for a minute, so a page making several calls costs one check.
type ProvisioningAuth struct {
	// SharedSecret: "" accepts only OpenID tokens; "disable" refuses all.
	SharedSecret string
	// Config gives our homeserver (its URL answers for its own users).
	Config *Config
	client *http.Client

	mu     sync.Mutex
	openID map[[32]byte]openIDEntry // token hash → user
}

type openIDEntry struct {
	user    id.UserID
	expires time.Time
}

// NewProvisioningAuth returns the authenticator of a provisioning API.
func NewProvisioningAuth(sharedSecret string, cfg *Config) *ProvisioningAuth {
	return &ProvisioningAuth{SharedSecret: sharedSecret, Config: cfg, client: &http.Client{Timeout: 10 * time.Second},
		openID: map[[32]byte]openIDEntry{}}
}

// Authenticate returns the user a request acts for, or writes the error
// (the spec's JSON: 401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN, 400
// M_INVALID_PARAM, 404 when disabled) and returns false.
func (pa *ProvisioningAuth) Authenticate(w http.ResponseWriter, r *http.Request) (id.UserID, bool) {
	if pa.SharedSecret == "disable" {
		mautrix.MNotFound.WithMessage("Provisioning is disabled").WithStatus(http.StatusNotFound).Write(w)
		return "", false
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		mautrix.MMissingToken.WithMessage("Missing Authorization: Bearer token").WithStatus(http.StatusUnauthorized).Write(w)
		return "", false
	}
	queryUser := id.UserID(r.URL.Query().Get("user_id"))
	if pa.SharedSecret != "" && subtle.ConstantTimeCompare([]byte(token), []byte(pa.SharedSecret)) == 1 {
		if _, _, err := queryUser.Parse(); err != nil {
			mautrix.MInvalidParam.WithMessage("user_id must name the user to act for").WithStatus(http.StatusBadRequest).Write(w)
			return "", false
		}
		return queryUser, true
	}
	userID, err := pa.checkOpenID(r.Context(), token, queryUser)
	if err != nil {
		mautrix.MUnknownToken.WithMessage("Unknown token").WithStatus(http.StatusUnauthorized).Write(w)
		return "", false
	}
	return userID, true
}

// checkOpenID asks the user's homeserver whom an OpenID token belongs to.
func (pa *ProvisioningAuth) checkOpenID(ctx context.Context, token string, claimed id.UserID) (id.UserID, error) {
	key := sha256.Sum256([]byte(token))
	pa.mu.Lock()
	if e, ok := pa.openID[key]; ok && time.Now().Before(e.expires) && (claimed == "" || claimed == e.user) {
		pa.mu.Unlock()
		return e.user, nil
	}
	pa.mu.Unlock()
	server := pa.Config.ServerName
	if claimed != "" {
		server = claimed.Homeserver()
	}
	base := pa.Config.HomeserverURL
	if server != pa.Config.ServerName {
		resolved, err := federation.ResolveServerName(ctx, server)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", server, err)
		}
		base = "https://" + resolved.HostHeader
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		strings.TrimRight(base, "/")+"/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(token), nil)
	if err != nil {
		return "", err
	}
	resp, err := pa.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("userinfo: HTTP %d", resp.StatusCode)
	}
	var info struct {
		Sub id.UserID `json:"sub"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 64<<10)).Decode(&info); err != nil {
		return "", fmt.Errorf("userinfo: %w", err)
	}
	if info.Sub.Homeserver() != server || (claimed != "" && info.Sub != claimed) {
		return "", errors.New("userinfo answered for another user")
	}
	pa.mu.Lock()
	now := time.Now()
	for k, e := range pa.openID {
		if now.After(e.expires) {
			delete(pa.openID, k)
		}
	}
	pa.openID[key] = openIDEntry{user: info.Sub, expires: now.Add(time.Minute)}
	pa.mu.Unlock()
	return info.Sub, nil
}

// WriteJSON answers 200 with v as JSON.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// ReadJSON decodes a JSON request body of at most 64 KiB into v, or
// answers 400 M_NOT_JSON and returns false.
func ReadJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(v); err != nil {
		mautrix.MNotJSON.WithMessage("Request body must be a JSON object: " + err.Error()).WithStatus(http.StatusBadRequest).Write(w)
		return false
	}
	return true
}
