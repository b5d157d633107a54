package webhooks

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/id"
)

// Hook is an incoming webhook.
type Hook struct {
	// ID is the hook's public name in commands and logs (not a secret).
	ID        string
	RoomID    id.RoomID
	Name      string
	CreatedBy id.UserID
	CreatedAt time.Time
	// ExpiresAt is zero for a hook that does not expire.
	ExpiresAt time.Time
	// Template renders generic JSON ("" for the default dump).
	Template string
	// SigningSecret, when set, is the HMAC-SHA256 key requests must be
	// signed with.
	SigningSecret string
}

// ErrNoHook is the error for a hook that does not exist (or is revoked).
var ErrNoHook = errors.New("no such hook")

// newToken returns a hook secret (32 base62 characters: 190 bits) and the
// hash stored in its place.
func newToken() (token, hash string) {
	token = random.String(32)
	return token, hashToken(token)
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

const hookColumns = `hook_id, room_id, name, created_by, created_at, expires_at, template, signing_secret`

func scanHook(row interface{ Scan(...any) error }) (*Hook, error) {
	var h Hook
	var created, expires int64
	err := row.Scan(&h.ID, &h.RoomID, &h.Name, &h.CreatedBy, &created, &expires, &h.Template, &h.SigningSecret)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNoHook
	} else if err != nil {
		return nil, err
	}
	h.CreatedAt = time.UnixMilli(created)
	if expires != 0 {
		h.ExpiresAt = time.UnixMilli(expires)
	}
	return &h, nil
}

// validHookName keeps names short and printable: they appear in commands,
// display names and ghost IDs.
func validHookName(name string) error {
	if name == "" || len(name) > 64 || strings.ContainsAny(name, " \t\r\n") {
		return errors.New("a hook name is 1–64 characters without spaces")
	}
	return nil
}

// CreateHook makes a hook posting into roomID and returns it with its URL
// secret (shown once: only its hash is kept).
func (s *Service) CreateHook(ctx context.Context, roomID id.RoomID, name string, creator id.UserID, expiresIn time.Duration) (*Hook, string, error) {
	if err := validHookName(name); err != nil {
		return nil, "", err
	}
	token, hash := newToken()
	h := &Hook{ID: strings.ToLower(random.String(10)), RoomID: roomID, Name: name, CreatedBy: creator, CreatedAt: time.Now()}
	var expires int64
	if expiresIn > 0 {
		h.ExpiresAt = h.CreatedAt.Add(expiresIn)
		expires = h.ExpiresAt.UnixMilli()
	}
	_, err := s.DB.Exec(ctx, `INSERT INTO webhook_hooks (hook_id, token_hash, room_id, name, created_by, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, h.ID, hash, roomID, name, creator, h.CreatedAt.UnixMilli(), expires)
	if err != nil {
		if existing, _ := s.HookByName(ctx, roomID, name); existing != nil {
			return nil, "", fmt.Errorf("this room already has a hook named %q", name)
		}
		return nil, "", fmt.Errorf("create hook: %w", err)
	}
	return h, token, nil
}

// HookByToken returns the hook whose URL secret is token: ErrNoHook for
// none, a revoked or an expired one.
func (s *Service) HookByToken(ctx context.Context, token string) (*Hook, error) {
	h, err := scanHook(s.DB.QueryRow(ctx, `SELECT `+hookColumns+` FROM webhook_hooks WHERE token_hash = $1`, hashToken(token)))
	if err != nil {
		return nil, err
	}
	if !h.ExpiresAt.IsZero() && time.Now().After(h.ExpiresAt) {
		return nil, ErrNoHook
	}
	return h, nil
}

// HookByName returns a room's hook by name.
func (s *Service) HookByName(ctx context.Context, roomID id.RoomID, name string) (*Hook, error) {
	return scanHook(s.DB.QueryRow(ctx, `SELECT `+hookColumns+` FROM webhook_hooks WHERE room_id = $1 AND name = $2`, roomID, name))
}

// Hooks lists a room's hooks by name.
func (s *Service) Hooks(ctx context.Context, roomID id.RoomID) ([]*Hook, error) {
	rows, err := s.DB.Query(ctx, `SELECT `+hookColumns+` FROM webhook_hooks WHERE room_id = $1 ORDER BY name`, roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Hook
	for rows.Next() {
		h, err := scanHook(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// RevokeHook deletes a hook: its URL answers 404 from now on.
func (s *Service) RevokeHook(ctx context.Context, h *Hook) error {
	_, err := s.DB.Exec(ctx, `DELETE FROM webhook_hooks WHERE hook_id = $1`, h.ID)
	return err
}

// RotateHook gives a hook a new URL secret; the old URL answers 404.
func (s *Service) RotateHook(ctx context.Context, h *Hook) (token string, err error) {
	token, hash := newToken()
	_, err = s.DB.Exec(ctx, `UPDATE webhook_hooks SET token_hash = $2 WHERE hook_id = $1`, h.ID, hash)
	return token, err
}

// SetTemplate sets (or with "" clears) a hook's template for generic JSON.
func (s *Service) SetTemplate(ctx context.Context, h *Hook, tmpl string) error {
	_, err := s.DB.Exec(ctx, `UPDATE webhook_hooks SET template = $2 WHERE hook_id = $1`, h.ID, tmpl)
	if err == nil {
		h.Template = tmpl
	}
	return err
}

// SetSigningSecret makes a hook require signed requests (secret "" stops
// requiring them).
func (s *Service) SetSigningSecret(ctx context.Context, h *Hook, secret string) error {
	_, err := s.DB.Exec(ctx, `UPDATE webhook_hooks SET signing_secret = $2 WHERE hook_id = $1`, h.ID, secret)
	if err == nil {
		h.SigningSecret = secret
	}
	return err
}
