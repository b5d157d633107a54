//go:build !race

package ircx_test

const raceEnabled = false
