// Package accounts owns local accounts: user ID rules, password hashing,
// devices, and the issuing, checking, refreshing and revoking of access
// tokens. The client API and the `switchboard user` CLI both go through it,
// so an account created either way behaves the same.
package accounts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Errors callers map onto Matrix error codes.
var (
	ErrInvalidUsername    = errors.New("invalid username")
	ErrUserInUse          = errors.New("user ID already taken")
	ErrInvalidCredentials = errors.New("invalid username or password")
	ErrDeactivated        = errors.New("account deactivated")
	ErrUnknownToken       = errors.New("unknown token")
	ErrExpiredToken       = errors.New("access token expired")
	ErrWeakPassword       = errors.New("password too weak")
)

// MaxPasswordBytes bounds the work one login can cause.
const MaxPasswordBytes = 512

// touchInterval is how stale a device's last_seen may get before a request
// writes it again: per-request writes would double the cost of every call.
const touchInterval = 5 * time.Minute

// Service is the accounts subsystem.
type Service struct {
	DB         *storage.DB
	ServerName string
	Hasher     *Hasher

	tokenLifetime time.Duration
	minPassword   int

	lastTouch sync.Map // "user|device" -> time.Time
}

// New builds the accounts service from config.
func New(db *storage.DB, cfg *config.Config) *Service {
	return &Service{
		DB:            db,
		ServerName:    cfg.ServerName,
		Hasher:        NewHasher(cfg.Auth.PasswordHashing),
		tokenLifetime: cfg.Auth.AccessTokenLifetime.D(),
		minPassword:   cfg.Auth.MinPasswordLength,
	}
}

// UserIDFor turns a requested username into a local user ID: lowercased
// (as Synapse does, so "Alice" and "alice" are one account), checked against
// the spec's localpart grammar and the 255-byte limit.
func (s *Service) UserIDFor(username string) (id.UserID, error) {
	localpart := strings.ToLower(strings.TrimSpace(username))
	if err := id.ValidateUserLocalpart(localpart); err != nil {
		return "", fmt.Errorf("%w: %q may only contain a-z, 0-9, and . _ = - / +", ErrInvalidUsername, username)
	}
	userID := id.NewUserID(localpart, s.ServerName)
	if len(userID) > 255 {
		return "", fmt.Errorf("%w: user ID would be longer than 255 bytes", ErrInvalidUsername)
	}
	return userID, nil
}

// ResolveLogin maps a login identifier (localpart or full user ID) to a
// local user ID.
func (s *Service) ResolveLogin(user string) (id.UserID, error) {
	if strings.HasPrefix(user, "@") {
		localpart, server, err := id.UserID(user).Parse()
		if err != nil || server != s.ServerName {
			return "", ErrInvalidCredentials
		}
		user = localpart
	}
	userID, err := s.UserIDFor(user)
	if err != nil {
		return "", ErrInvalidCredentials
	}
	return userID, nil
}

// CheckPasswordPolicy enforces the configured minimum length.
func (s *Service) CheckPasswordPolicy(password string) error {
	if utf8.RuneCountInString(password) < s.minPassword {
		return fmt.Errorf("%w: must be at least %d characters", ErrWeakPassword, s.minPassword)
	}
	if len(password) > MaxPasswordBytes {
		return fmt.Errorf("%w: must be at most %d bytes", ErrWeakPassword, MaxPasswordBytes)
	}
	return nil
}

// NewUser describes an account to create.
type NewUser struct {
	UserID      id.UserID
	Password    string // empty: no password login
	Admin       bool
	UserType    string
	DisplayName string // defaults to the localpart
	// AppserviceID marks a ghost registered by an appservice.
	AppserviceID string

	passwordHash string
}

// PrepareUser checks the password policy and hashes the password. Callers
// that create the user inside a larger transaction call it first, so the
// deliberately slow hashing never runs while the transaction holds locks.
func (s *Service) PrepareUser(nu NewUser) (NewUser, error) {
	if nu.Password == "" || nu.passwordHash != "" {
		return nu, nil
	}
	if err := s.CheckPasswordPolicy(nu.Password); err != nil {
		return nu, err
	}
	hash, err := s.Hasher.Hash(nu.Password)
	if err != nil {
		return nu, err
	}
	nu.passwordHash, nu.Password = hash, ""
	return nu, nil
}

// CreateUser creates an account with its initial display name, atomically.
func (s *Service) CreateUser(ctx context.Context, nu NewUser) error {
	nu, err := s.PrepareUser(nu)
	if err != nil {
		return err
	}
	return s.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		err := s.DB.CreateUser(ctx, &storage.User{UserID: nu.UserID, PasswordHash: nu.passwordHash, IsAdmin: nu.Admin,
			UserType: nu.UserType, AppserviceID: nu.AppserviceID})
		if errors.Is(err, storage.ErrUserExists) {
			return ErrUserInUse
		} else if err != nil {
			return err
		}
		name := nu.DisplayName
		if name == "" {
			name = nu.UserID.Localpart()
		}
		return s.DB.SetProfileField(ctx, nu.UserID, "displayname", jsonString(name))
	})
}

// CheckPassword verifies a user's password. Unknown users, wrong passwords
// and password-less accounts all give ErrInvalidCredentials after the same
// amount of hashing work. A deactivated account has no password left to
// check and gives ErrDeactivated, as the spec's M_USER_DEACTIVATED intends;
// that an ID was deactivated is not a secret (it can never be registered).
func (s *Service) CheckPassword(ctx context.Context, userID id.UserID, password string) (*storage.User, error) {
	if len(password) > MaxPasswordBytes {
		return nil, ErrInvalidCredentials
	}
	user, err := s.DB.GetUser(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		s.Hasher.Verify("", password)
		return nil, ErrInvalidCredentials
	} else if err != nil {
		return nil, err
	}
	if user.Deactivated {
		s.Hasher.Verify("", password)
		return nil, ErrDeactivated
	}
	if !s.Hasher.Verify(user.PasswordHash, password) {
		return nil, ErrInvalidCredentials
	}
	return user, nil
}

// Tokens are the credentials a login, registration or refresh returns.
type Tokens struct {
	UserID       id.UserID
	DeviceID     id.DeviceID
	AccessToken  string
	RefreshToken string
	ExpiresInMS  int64
}

// LoginOptions configures a new session.
type LoginOptions struct {
	DeviceID    id.DeviceID // empty: generate one
	DisplayName *string
	Refreshable bool // the client supports refresh tokens
	IP          string
}

// StartSession creates (or takes over) a device and issues its tokens.
func (s *Service) StartSession(ctx context.Context, userID id.UserID, opts LoginOptions) (*Tokens, error) {
	deviceID := opts.DeviceID
	if deviceID == "" {
		deviceID = id.DeviceID(random.StringCharset(10, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
	}
	var tokens *Tokens
	err := s.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := s.DB.EnsureDevice(ctx, userID, deviceID, opts.DisplayName, opts.IP); err != nil {
			return err
		}
		var err error
		tokens, err = s.issueTokens(ctx, userID, deviceID, opts.Refreshable, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return tokens, nil
}

// issueTokens stores a fresh access token (and refresh token if wanted).
func (s *Service) issueTokens(ctx context.Context, userID id.UserID, deviceID id.DeviceID, refreshable bool, prevRefresh *int64) (*Tokens, error) {
	t := &Tokens{UserID: userID, DeviceID: deviceID, AccessToken: random.Token("sbat", 32)}
	var refreshID, expires *int64
	if refreshable {
		t.RefreshToken = random.Token("sbrt", 32)
		rid, err := s.DB.InsertRefreshToken(ctx, HashToken(t.RefreshToken), userID, deviceID, prevRefresh)
		if err != nil {
			return nil, err
		}
		refreshID = &rid
		if s.tokenLifetime > 0 {
			exp := time.Now().Add(s.tokenLifetime).UnixMilli()
			expires = &exp
			t.ExpiresInMS = s.tokenLifetime.Milliseconds()
		}
	}
	if err := s.DB.InsertAccessToken(ctx, HashToken(t.AccessToken), userID, deviceID, refreshID, expires); err != nil {
		return nil, err
	}
	return t, nil
}

// HashToken is how tokens are stored and looked up.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Authenticate resolves an access token. Lookup is by SHA-256 digest, so
// comparison timing says nothing about the stored token.
func (s *Service) Authenticate(ctx context.Context, token, ip string) (*storage.Session, error) {
	if token == "" || len(token) > 512 {
		return nil, ErrUnknownToken
	}
	sess, err := s.DB.LookupAccessToken(ctx, HashToken(token))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrUnknownToken
	} else if err != nil {
		return nil, err
	}
	if sess.Deactivated {
		return nil, ErrUnknownToken
	}
	now := time.Now()
	if sess.ExpiresTS != nil && *sess.ExpiresTS <= now.UnixMilli() {
		return nil, ErrExpiredToken
	}
	if sess.RefreshPrevID != nil {
		// First use of a refreshed generation: the client has the new
		// tokens, so the old refresh token may now die.
		if err := s.DB.RetirePreviousRefreshToken(ctx, *sess.RefreshTokenID, *sess.RefreshPrevID); err != nil {
			return nil, err
		}
		sess.RefreshPrevID = nil
	}
	s.touch(ctx, sess, ip, now)
	return sess, nil
}

func (s *Service) touch(ctx context.Context, sess *storage.Session, ip string, now time.Time) {
	key := string(sess.UserID) + "|" + string(sess.DeviceID)
	if last, ok := s.lastTouch.Load(key); ok && now.Sub(last.(time.Time)) < touchInterval {
		return
	}
	s.lastTouch.Store(key, now)
	// Best effort: a failed last-seen update must not fail the request.
	_ = s.DB.TouchDevice(ctx, sess.UserID, sess.DeviceID, ip, now.UnixMilli())
}

// Refresh exchanges a refresh token for a new access and refresh token.
// The old refresh token stays valid until the new generation is used.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (*Tokens, error) {
	if refreshToken == "" || len(refreshToken) > 512 {
		return nil, ErrUnknownToken
	}
	var tokens *Tokens
	err := s.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		rt, err := s.DB.GetRefreshToken(ctx, HashToken(refreshToken))
		if errors.Is(err, storage.ErrNotFound) {
			return ErrUnknownToken
		} else if err != nil {
			return err
		}
		// Successors that were never used were lost by the client.
		if err := s.DB.DeleteRefreshSuccessors(ctx, rt.ID); err != nil {
			return err
		}
		tokens, err = s.issueTokens(ctx, rt.UserID, rt.DeviceID, true, &rt.ID)
		return err
	})
	return tokens, err
}

// Logout ends a session: the device and all its tokens go, as the spec's
// /logout requires.
func (s *Service) Logout(ctx context.Context, sess *storage.Session) error {
	s.lastTouch.Delete(string(sess.UserID) + "|" + string(sess.DeviceID))
	return s.DB.DeleteDevices(ctx, sess.UserID, sess.DeviceID)
}

// LogoutAll ends every session of the user.
func (s *Service) LogoutAll(ctx context.Context, userID id.UserID) error {
	return s.DB.DeleteOtherDevices(ctx, userID, "")
}

// ChangePassword sets a new password; with logoutOthers every device but
// keep is signed out (keep may be empty to sign out all).
func (s *Service) ChangePassword(ctx context.Context, userID id.UserID, newPassword string, logoutOthers bool, keep id.DeviceID) error {
	if err := s.CheckPasswordPolicy(newPassword); err != nil {
		return err
	}
	hash, err := s.Hasher.Hash(newPassword)
	if err != nil {
		return err
	}
	return s.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := s.DB.SetPasswordHash(ctx, userID, hash); err != nil {
			return err
		}
		if logoutOthers {
			return s.DB.DeleteOtherDevices(ctx, userID, keep)
		}
		return nil
	})
}

// Deactivate permanently disables an account.
func (s *Service) Deactivate(ctx context.Context, userID id.UserID, erase bool) error {
	return s.DB.DeactivateUser(ctx, userID, erase)
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
