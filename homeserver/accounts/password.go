package accounts

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/switchboard-im/switchboard/homeserver/config"
)

// Hasher produces and checks password hashes. New hashes are argon2id in
// the PHC string format; bcrypt hashes (as Synapse stores them) are accepted
// so accounts can be imported.
type Hasher struct {
	params config.Argon2
	// slots bounds concurrent hashing to the CPU count: each argon2id run
	// allocates memory_kib, and more runs than cores only add memory (32
	// concurrent logins peaked at 1.1 GiB) without adding throughput.
	slots chan struct{}
	// dummy is checked against when the user does not exist, so a login
	// for an unknown user takes as long as one with a wrong password. It is
	// made on first use: hashing allocates memory_kib, which an idle
	// server should not hold.
	dummy     string
	dummyOnce sync.Once
}

// NewHasher returns a hasher with the given argon2id cost.
func NewHasher(params config.Argon2) *Hasher {
	return &Hasher{params: params, slots: make(chan struct{}, runtime.GOMAXPROCS(0))}
}

// Hash returns the PHC-format argon2id hash of password.
func (h *Hasher) Hash(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generate salt: %w", err)
	}
	p := h.params
	h.slots <- struct{}{}
	defer func() { <-h.slots }()
	key := argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, 32)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Iterations, p.Parallelism,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

var errUnknownHash = errors.New("unrecognised password hash format")

// Verify reports whether password matches hash, in constant time. An empty
// hash (no password set) never matches but costs the same time.
func (h *Hasher) Verify(hash, password string) bool {
	if hash == "" {
		h.dummyOnce.Do(func() { h.dummy, _ = h.Hash("switchboard-timing-equaliser") })
	}
	h.slots <- struct{}{}
	defer func() { <-h.slots }()
	if hash == "" {
		_, _ = verify(h.dummy, password)
		return false
	}
	ok, err := verify(hash, password)
	return err == nil && ok
}

func verify(hash, password string) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		var version int
		var m, t uint32
		var p uint8
		parts := strings.Split(hash, "$")
		if len(parts) != 6 {
			return false, errUnknownHash
		}
		if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
			return false, errUnknownHash
		}
		if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
			return false, errUnknownHash
		}
		salt, err := base64.RawStdEncoding.DecodeString(parts[4])
		if err != nil {
			return false, errUnknownHash
		}
		want, err := base64.RawStdEncoding.DecodeString(parts[5])
		if err != nil || len(want) == 0 {
			return false, errUnknownHash
		}
		got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
		return subtle.ConstantTimeCompare(got, want) == 1, nil
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil, nil
	default:
		return false, errUnknownHash
	}
}
