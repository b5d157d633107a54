// Package loopback finds free ports on 127.0.0.1 for tests, benchmarks and
// the peers they start (tests only ever use loopback addresses).
package loopback

import (
	"fmt"
	"net"
)

// FreeAddr returns a 127.0.0.1:PORT that was free a moment ago. Another
// process may take it before the caller binds it; callers that start a peer
// on it retry on "address in use".
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// FreePort is FreeAddr's port number.
func FreePort() (int, error) {
	addr, err := FreeAddr()
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	var n int
	_, err = fmt.Sscan(port, &n)
	return n, err
}
