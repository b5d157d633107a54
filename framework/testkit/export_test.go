package testkit

import "testing"

// WithTB returns a copy of k that reports to tb instead of k's test, so a
// test can check how a method fails. Only for failure paths: state the copy
// changes on success is not shared with k.
func (k *Kit) WithTB(tb testing.TB) *Kit {
	c := *k
	c.t = tb
	return &c
}
