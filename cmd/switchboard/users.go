package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// openAccounts opens the data dir's database for an admin command. It
// works while the server runs: SQLite is in WAL mode with a busy timeout,
// and PostgreSQL is shared anyway.
func openAccounts(ctx context.Context, dataDir string) (*accounts.Service, func(), error) {
	cfg, err := config.Load(dataDir)
	if err != nil {
		return nil, nil, err
	}
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir, 2, zerolog.Nop())
	if err != nil {
		return nil, nil, err
	}
	return accounts.New(db, cfg), func() { db.Close() }, nil
}

func cmdUser(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("expected a subcommand: add, list, deactivate, reset-password")
	}
	switch args[0] {
	case "add":
		return userAdd(args[1:], stdout)
	case "list":
		return userList(args[1:], stdout)
	case "deactivate":
		return userDeactivate(args[1:], stdout)
	case "reset-password":
		return userResetPassword(args[1:], stdout)
	}
	return usagef("unknown subcommand %q (add, list, deactivate, reset-password)", args[0])
}

type passwordFlags struct {
	password *string
	file     *string
}

func addPasswordFlags(fs *flag.FlagSet) passwordFlags {
	return passwordFlags{
		password: fs.String("password", "", "the password (visible in the process list: prefer --password-file or the prompt)"),
		file:     fs.String("password-file", "", "read the password from this file's first line"),
	}
}

// read returns the password from a flag, a file, an interactive prompt, or
// the first line of standard input, in that order. An empty password is an
// error: it would create an account nobody can log in to.
func (p passwordFlags) read(stdout io.Writer) (string, error) {
	password, err := p.readRaw(stdout)
	if err == nil && password == "" {
		return "", usagef("the password must not be empty")
	}
	return password, err
}

func (p passwordFlags) readRaw(stdout io.Writer) (string, error) {
	switch {
	case *p.password != "" && *p.file != "":
		return "", usagef("use either --password or --password-file, not both")
	case *p.password != "":
		return *p.password, nil
	case *p.file != "":
		data, err := os.ReadFile(*p.file)
		if err != nil {
			return "", fmt.Errorf("password file: %w", err)
		}
		line, _, _ := strings.Cut(string(data), "\n")
		return strings.TrimRight(line, "\r"), nil
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprint(stdout, "Password: ")
		first, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stdout)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stdout, "Repeat password: ")
		second, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(stdout)
		if err != nil {
			return "", err
		}
		if string(first) != string(second) {
			return "", errors.New("passwords do not match")
		}
		return string(first), nil
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", usagef("no password given: use --password-file, --password, or pipe it on standard input")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func userAdd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("user add", flag.ContinueOnError)
	data := dataFlag(fs)
	pw := addPasswordFlags(fs)
	admin := fs.Bool("admin", false, "make the user a server admin")
	displayName := fs.String("display-name", "", "initial display name (default: the user name)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	name, err := oneName(pos, "user name")
	if err != nil {
		return err
	}
	ctx := context.Background()
	acc, closeDB, err := openAccounts(ctx, *data)
	if err != nil {
		return err
	}
	defer closeDB()
	userID, err := acc.UserIDFor(name)
	if err != nil {
		return err
	}
	password, err := pw.read(stdout)
	if err != nil {
		return err
	}
	if err := acc.CreateUser(ctx, accounts.NewUser{UserID: userID, Password: password, Admin: *admin, DisplayName: *displayName}); err != nil {
		return fmt.Errorf("%s: %w", userID, err)
	}
	role := "user"
	if *admin {
		role = "admin"
	}
	fmt.Fprintf(stdout, "Created %s %s\n", role, userID)
	return nil
}

func userList(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("user list", flag.ContinueOnError)
	data := dataFlag(fs)
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	ctx := context.Background()
	acc, closeDB, err := openAccounts(ctx, *data)
	if err != nil {
		return err
	}
	defer closeDB()
	users, err := acc.DB.ListUsers(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER ID\tADMIN\tDEACTIVATED\tCREATED\tAPPSERVICE")
	for _, u := range users {
		appservice := u.AppserviceID // the bridge or bot whose user it is
		if appservice == "" {
			appservice = "-"
		}
		fmt.Fprintf(tw, "%s\t%t\t%t\t%s\t%s\n", u.UserID, u.IsAdmin, u.Deactivated, time.UnixMilli(u.CreatedTS).UTC().Format(time.DateTime), appservice)
	}
	return tw.Flush()
}

func userDeactivate(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("user deactivate", flag.ContinueOnError)
	data := dataFlag(fs)
	erase := fs.Bool("erase", false, "also erase the profile (display name, avatar)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	name, err := oneName(pos, "user name")
	if err != nil {
		return err
	}
	ctx := context.Background()
	acc, closeDB, err := openAccounts(ctx, *data)
	if err != nil {
		return err
	}
	defer closeDB()
	userID, err := acc.ResolveLogin(name)
	if err != nil {
		return fmt.Errorf("%q is not a local user", name)
	}
	if err := acc.Deactivate(ctx, userID, *erase); errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("no such user %s", userID)
	} else if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Deactivated %s; all its sessions are logged out\n", userID)
	return nil
}

func userResetPassword(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("user reset-password", flag.ContinueOnError)
	data := dataFlag(fs)
	pw := addPasswordFlags(fs)
	keep := fs.Bool("keep-sessions", false, "do not log out the user's devices")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	name, err := oneName(pos, "user name")
	if err != nil {
		return err
	}
	ctx := context.Background()
	acc, closeDB, err := openAccounts(ctx, *data)
	if err != nil {
		return err
	}
	defer closeDB()
	userID, err := acc.ResolveLogin(name)
	if err != nil {
		return fmt.Errorf("%q is not a local user", name)
	}
	if u, err := acc.DB.GetUser(ctx, userID); errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated) {
		return fmt.Errorf("no active user %s", userID)
	} else if err != nil {
		return err
	}
	password, err := pw.read(stdout)
	if err != nil {
		return err
	}
	if err := acc.ChangePassword(ctx, userID, password, !*keep, ""); err != nil {
		return err
	}
	msg := "all its sessions are logged out"
	if *keep {
		msg = "existing sessions kept"
	}
	fmt.Fprintf(stdout, "Password of %s reset; %s\n", userID, msg)
	return nil
}

func cmdRegistrationToken(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("expected a subcommand: create, list, delete")
	}
	fs := flag.NewFlagSet("registration-token "+args[0], flag.ContinueOnError)
	data := dataFlag(fs)
	var uses *int64
	var expires *time.Duration
	var token *string
	if args[0] == "create" {
		uses = fs.Int64("uses", 0, "how many registrations the token allows (0: unlimited)")
		expires = fs.Duration("expires", 0, "validity period, e.g. 48h (0: never expires)")
		token = fs.String("token", "", "the token text (default: 16 random characters)")
	}
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if args[0] == "create" && (*uses < 0 || *expires < 0) {
		return usagef("--uses and --expires must not be negative")
	}
	ctx := context.Background()
	switch args[0] {
	case "create", "list", "delete":
	default:
		return usagef("unknown subcommand %q (create, list, delete)", args[0])
	}
	acc, closeDB, err := openAccounts(ctx, *data)
	if err != nil {
		return err
	}
	defer closeDB()
	switch args[0] {
	case "create":
		spec := accounts.TokenSpec{Token: *token}
		if *uses > 0 {
			spec.UsesAllowed = uses
		}
		if *expires > 0 {
			exp := time.Now().Add(*expires).UnixMilli()
			spec.ExpiryTS = &exp
		}
		t, err := acc.CreateRegistrationToken(ctx, spec)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, t.Token)
	case "list":
		tokens, err := acc.DB.ListRegistrationTokens(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TOKEN\tUSES ALLOWED\tPENDING\tCOMPLETED\tEXPIRES\tVALID")
		now := time.Now().UnixMilli()
		for _, t := range tokens {
			allowed, expiry := "unlimited", "never"
			if t.UsesAllowed != nil {
				allowed = fmt.Sprint(*t.UsesAllowed)
			}
			if t.ExpiryTS != nil {
				expiry = time.UnixMilli(*t.ExpiryTS).UTC().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%t\n", t.Token, allowed, t.Pending, t.Completed, expiry, t.Valid(now))
		}
		return tw.Flush()
	case "delete":
		name, err := oneName(pos, "token")
		if err != nil {
			return err
		}
		if err := acc.DB.DeleteRegistrationToken(ctx, name); errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("no such token %q", name)
		} else if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Deleted token %s\n", name)
	}
	return nil
}
