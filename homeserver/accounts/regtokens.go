package accounts

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"go.mau.fi/util/random"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// registrationTokenGrammar is the spec's opaque-identifier grammar; tokens
// are at most 64 characters.
var registrationTokenGrammar = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,64}$`)

// ErrInvalidToken reports a bad registration token request; its text says why.
var ErrInvalidToken = errors.New("invalid registration token request")

// TokenSpec describes a registration token to create.
type TokenSpec struct {
	Token       string // empty: generate Length random characters
	Length      int    // default 16
	UsesAllowed *int64 // nil: unlimited
	ExpiryTS    *int64 // nil: never, ms since epoch
}

// CreateRegistrationToken validates spec and stores the token. The admin
// API and the CLI both come through here.
func (s *Service) CreateRegistrationToken(ctx context.Context, spec TokenSpec) (*storage.RegistrationToken, error) {
	if spec.Token == "" {
		if spec.Length == 0 {
			spec.Length = 16
		}
		if spec.Length < 1 || spec.Length > 64 {
			return nil, fmt.Errorf("%w: length must be between 1 and 64", ErrInvalidToken)
		}
		spec.Token = random.String(spec.Length)
	} else if !registrationTokenGrammar.MatchString(spec.Token) {
		return nil, fmt.Errorf("%w: token must be 1-64 characters of A-Z, a-z, 0-9, . _ ~ -", ErrInvalidToken)
	}
	if err := CheckTokenLimits(spec.UsesAllowed, spec.ExpiryTS); err != nil {
		return nil, err
	}
	t := &storage.RegistrationToken{Token: spec.Token, UsesAllowed: spec.UsesAllowed, ExpiryTS: spec.ExpiryTS}
	if err := s.DB.CreateRegistrationToken(ctx, t); err != nil {
		return nil, err
	}
	return t, nil
}

// CheckTokenLimits validates uses_allowed and expiry_time.
func CheckTokenLimits(usesAllowed, expiryTS *int64) error {
	if usesAllowed != nil && *usesAllowed < 0 {
		return fmt.Errorf("%w: uses_allowed must not be negative", ErrInvalidToken)
	}
	if expiryTS != nil && *expiryTS <= time.Now().UnixMilli() {
		return fmt.Errorf("%w: expiry_time must be in the future", ErrInvalidToken)
	}
	return nil
}
