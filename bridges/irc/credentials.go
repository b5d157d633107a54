package irc

// Puppet credentials: the services account and password a Matrix user
// stores with `storepass`, used to log their puppet in with SASL PLAIN, or
// with NickServ IDENTIFY where the network offers no SASL.
//
// Passwords are sealed with AES-256-GCM under a key kept in a file
// (password_key_file), not in the database: a leaked database alone does
// not leak IRC passwords. The user ID and network are the additional data,
// so a sealed password copied to another user's row does not open.

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"maunium.net/go/mautrix/id"
)

// credentials are a puppet's services login.
type credentials struct {
	Account  string
	Password string
}

// storedCredentials is what the user KV holds.
type storedCredentials struct {
	Account string `json:"account"`
	Sealed  []byte `json:"sealed"` // nonce ‖ AES-GCM(password)
}

// passwordBox seals and opens stored passwords; the key file is read (or
// made) on first use, so a bridge whose users store none needs none.
type passwordBox struct {
	path string
	once sync.Once
	aead cipher.AEAD
	err  error
}

func (b *passwordBox) cipher() (cipher.AEAD, error) {
	b.once.Do(func() {
		key, err := loadOrCreateKey(b.path)
		if err != nil {
			b.err = fmt.Errorf("password key %s: %w", b.path, err)
			return
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			b.err = err
			return
		}
		b.aead, b.err = cipher.NewGCM(block)
	})
	return b.aead, b.err
}

// loadOrCreateKey reads a 32-byte hex key, or writes a random one (0600)
// when the file does not exist.
func loadOrCreateKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) { // made meanwhile by another process
			return loadOrCreateKey(path)
		} else if err != nil {
			return nil, err
		}
		_, werr := f.WriteString(hex.EncodeToString(key) + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		return key, werr
	} else if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != 32 {
		return nil, errors.New("not 64 hexadecimal digits")
	}
	return key, nil
}

func sealContext(userID id.UserID, network string) []byte {
	return []byte("switchboard irc password\x00" + string(userID) + "\x00" + network)
}

func (b *passwordBox) seal(userID id.UserID, network, password string) ([]byte, error) {
	aead, err := b.cipher()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(password)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, []byte(password), sealContext(userID, network)), nil
}

func (b *passwordBox) open(userID id.UserID, network string, sealed []byte) (string, error) {
	aead, err := b.cipher()
	if err != nil {
		return "", err
	}
	if len(sealed) < aead.NonceSize() {
		return "", errors.New("stored password is damaged")
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], sealContext(userID, network))
	if err != nil {
		return "", errors.New("stored password does not open with the password key (was password_key_file replaced?)")
	}
	return string(plain), nil
}

// credentials returns the user's stored login on the network (nil: none).
func (n *network) credentials(ctx context.Context, userID id.UserID) (*credentials, error) {
	var st storedCredentials
	found, err := n.c.br.AS.UserKV(userID).Get(ctx, n.kvKey("credentials"), &st)
	if err != nil || !found {
		return nil, err
	}
	password, err := n.c.passwords.open(userID, n.cfg.ID, st.Sealed)
	if err != nil {
		return nil, err
	}
	return &credentials{Account: st.Account, Password: password}, nil
}

func (n *network) storeCredentials(ctx context.Context, userID id.UserID, cr credentials) error {
	sealed, err := n.c.passwords.seal(userID, n.cfg.ID, cr.Password)
	if err != nil {
		return err
	}
	return n.c.br.AS.UserKV(userID).Set(ctx, n.kvKey("credentials"), storedCredentials{Account: cr.Account, Sealed: sealed})
}

func (n *network) deleteCredentials(ctx context.Context, userID id.UserID) error {
	return n.c.br.AS.UserKV(userID).Delete(ctx, n.kvKey("credentials"))
}
