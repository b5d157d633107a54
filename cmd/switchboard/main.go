// Command switchboard is the one Switchboard binary: it initialises a data
// directory, runs the stack, and manages users and registration tokens.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// usageError makes main print usage and exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

type command struct {
	name    string
	summary string
	run     func(args []string, stdout io.Writer) error
}

func commands() []command {
	return []command{
		{"init", "write a data directory: config, signing key, secrets", cmdInit},
		{"run", "start every enabled component (initialising ./data if needed)", cmdRun},
		{"homeserver", "start only the homeserver", cmdHomeserver},
		{"webhooks", "run only the webhook bridge, against any homeserver (--config FILE)", cmdWebhooks},
		{"irc", "run only the IRC bridge, against any homeserver (--config FILE)", cmdIRC},
		{"user", "manage users: add, list, deactivate, reset-password", cmdUser},
		{"registration-token", "manage registration tokens: create, list, delete", cmdRegistrationToken},
		{"appservice", "manage application service registrations: list, add, remove", cmdAppservice},
		{"version", "print the version", cmdVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: switchboard COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-20s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'switchboard COMMAND -h' for a command's flags.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout)
		var ue usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "switchboard %s: %s\n", c.name, ue.msg)
			return 2
		default:
			fmt.Fprintf(stderr, "switchboard %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "switchboard: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// parseFlags parses flags and positional arguments in any order, so both
// "user add alice --admin" and "user add --admin alice" work.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(os.Stderr)
				fs.Usage()
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		// flag swallows a "--" terminator; everything after it is positional.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		args = rest
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func dataFlag(fs *flag.FlagSet) *string {
	return fs.String("data", "./data", "data directory holding switchboard.yaml")
}

func oneName(positional []string, what string) (string, error) {
	if len(positional) != 1 || strings.TrimSpace(positional[0]) == "" {
		return "", usagef("expected exactly one %s", what)
	}
	return positional[0], nil
}
