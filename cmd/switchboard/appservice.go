package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/appservice"
	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

func cmdAppservice(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("expected a subcommand: list, add, remove")
	}
	switch args[0] {
	case "list":
		return appserviceList(args[1:], stdout)
	case "add":
		return appserviceAdd(args[1:], stdout)
	case "remove":
		return appserviceRemove(args[1:], stdout)
	}
	return usagef("unknown subcommand %q (list, add, remove)", args[0])
}

// registrationFiles loads the config and lists the registration files the
// server reads (DATA/appservices/ and appservice_registrations).
func registrationFiles(dataDir string) (*config.Config, []appservice.File, error) {
	cfg, err := config.Load(dataDir)
	if err != nil {
		return nil, nil, err
	}
	files, err := appservice.Files(cfg.DataDir, cfg.AppserviceRegistrations)
	if err != nil {
		return nil, nil, err
	}
	return cfg, files, nil
}

// loadAppservices loads the data dir's registrations exactly as the server
// does at start (including the check against existing users), plus extra
// (a file being added), and returns them with the config.
func loadAppservices(ctx context.Context, dataDir string, extra ...appservice.File) (*config.Config, *appservice.Registry, error) {
	cfg, files, err := registrationFiles(dataDir)
	if err != nil {
		return nil, nil, err
	}
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir, 2, zerolog.Nop())
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	existing := func(ctx context.Context) ([]id.UserID, error) {
		users, err := db.ListUsers(ctx)
		if err != nil {
			return nil, err
		}
		ids := make([]id.UserID, 0, len(users))
		for _, u := range users {
			if !u.Deactivated {
				ids = append(ids, u.UserID)
			}
		}
		return ids, nil
	}
	// Nothing records yet which users an appservice registered, so every
	// existing user in an exclusive namespace counts as captured.
	reg, err := appservice.LoadFiles(ctx, append(files, extra...), cfg.ServerName, existing, nil)
	if err != nil {
		return nil, nil, err
	}
	return cfg, reg, nil
}

// appserviceColumns are the columns of `appservice list`; a column that
// needs more than the registration (queue length, last success) takes its
// data from a closure over whatever list loads for it.
func appserviceColumns(serverName string, queues map[string]*storage.AppserviceStream, current int64) []struct {
	header string
	value  func(*appservice.AppService) string
} {
	queue := func(as *appservice.AppService) *storage.AppserviceStream { return queues[as.ID()] }
	return []struct {
		header string
		value  func(*appservice.AppService) string
	}{
		{"ID", func(as *appservice.AppService) string { return as.ID() }},
		{"URL", func(as *appservice.AppService) string { return orDash(as.Registration.URL) }},
		{"SENDER", func(as *appservice.AppService) string { return as.SenderUserID(serverName).String() }},
		{"USER NAMESPACES", func(as *appservice.AppService) string {
			var nss []string
			for _, ns := range as.Registration.Namespaces.UserIDs {
				if ns.Exclusive {
					nss = append(nss, ns.Regex+" (exclusive)")
				} else {
					nss = append(nss, ns.Regex)
				}
			}
			return orDash(strings.Join(nss, ", "))
		}},
		{"RATE LIMITED", func(as *appservice.AppService) string { return fmt.Sprint(as.RateLimited()) }},
		// QUEUE is the stream positions not yet acknowledged: an upper
		// bound on the events waiting for the appservice.
		{"QUEUE", func(as *appservice.AppService) string {
			if q := queue(as); q != nil {
				return fmt.Sprint(max(current-q.AckedPos, 0))
			}
			return "-"
		}},
		{"IN FLIGHT", func(as *appservice.AppService) string {
			if q := queue(as); q != nil && q.TxnUpto != 0 {
				return fmt.Sprintf("txn %d (%d events)", q.TxnID, len(q.TxnEvents))
			}
			return "-"
		}},
		{"LAST SUCCESS", func(as *appservice.AppService) string {
			if q := queue(as); q != nil && q.LastSuccessTS != 0 {
				return time.UnixMilli(q.LastSuccessTS).UTC().Format(time.DateTime)
			}
			return "never"
		}},
		{"FAILURES", func(as *appservice.AppService) string {
			if q := queue(as); q != nil {
				return fmt.Sprint(q.Failures)
			}
			return "0"
		}},
		{"FILE", func(as *appservice.AppService) string { return as.File }},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// appserviceQueues reads the transaction queues' state (kept by the
// running server's pusher) and the current stream position.
func appserviceQueues(ctx context.Context, cfg *config.Config) (map[string]*storage.AppserviceStream, int64, error) {
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir, 2, zerolog.Nop())
	if err != nil {
		return nil, 0, err
	}
	defer db.Close()
	streams, err := db.AppserviceStreams(ctx)
	if err != nil {
		return nil, 0, err
	}
	current, err := db.CurrentStreamPos(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]*storage.AppserviceStream, len(streams))
	for _, st := range streams {
		out[st.ASID] = st
	}
	return out, current, nil
}

func appserviceList(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("appservice list", flag.ContinueOnError)
	data := dataFlag(fs)
	if pos, err := parseFlags(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	cfg, reg, err := loadAppservices(context.Background(), *data)
	if err != nil {
		return err
	}
	queues, current, err := appserviceQueues(context.Background(), cfg)
	if err != nil {
		return err
	}
	cols := appserviceColumns(cfg.ServerName, queues, current)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	cells := make([]string, len(cols))
	for i, c := range cols {
		cells[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
	for _, as := range reg.All() {
		for i, c := range cols {
			cells[i] = c.value(as)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func appserviceAdd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("appservice add", flag.ContinueOnError)
	data := dataFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	src, err := oneName(pos, "registration file")
	if err != nil {
		return err
	}
	cfg, files, err := registrationFiles(*data)
	if err != nil {
		return err
	}
	srcAbs, err := filepath.Abs(src)
	if err != nil {
		return err
	}
	for _, f := range files {
		if p, err := filepath.Abs(f.Path); err == nil && p == srcAbs {
			return fmt.Errorf("%s is already registered", src)
		}
	}
	content, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	dir := filepath.Join(cfg.DataDir, appservice.Dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// Validate the copy that will be installed, under the name the operator
	// gave. Its name starts with a dot, so a server reading the directory
	// meanwhile skips it.
	tmp, err := os.CreateTemp(dir, ".add-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	_, reg, err := loadAppservices(context.Background(), *data, appservice.File{Path: tmp.Name(), Name: src})
	if err != nil {
		return err
	}
	var added *appservice.AppService
	for _, as := range reg.All() {
		if as.File == src {
			added = as
		}
	}
	if added == nil {
		return errors.New("the new registration is missing after loading (bug)")
	}
	if !usableAsFileName(added.ID()) {
		return fmt.Errorf("%s: id: %q cannot name a file in %s (use letters, digits, spaces and . _ -, not starting with a dot)", src, added.ID(), dir)
	}
	dest := filepath.Join(dir, added.ID()+".yaml")
	// A hard link installs the complete file in one step and, unlike a
	// rename, fails instead of replacing a file already there.
	if err := os.Link(tmp.Name(), dest); errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s already exists", dest)
	} else if err != nil {
		return fmt.Errorf("install %s: %w", dest, err)
	}
	fmt.Fprintf(stdout, "Added appservice %q as %s (sender %s); send the server SIGHUP (or restart it) to load it\n",
		added.ID(), dest, added.SenderUserID(cfg.ServerName))
	return nil
}

// usableAsFileName accepts ids that make a plain file name in every
// filesystem we run on.
func usableAsFileName(s string) bool {
	if s == "" || len(s) > 200 || strings.HasPrefix(s, ".") || strings.TrimSpace(s) != s {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == ' ', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

func appserviceRemove(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("appservice remove", flag.ContinueOnError)
	data := dataFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	asID, err := oneName(pos, "appservice id")
	if err != nil {
		return err
	}
	_, files, err := registrationFiles(*data)
	if err != nil {
		return err
	}
	// Only the id is read, so a file that no longer validates (the usual
	// reason to remove one) can still be removed; so can a file named
	// ID.yaml whose id cannot be read at all.
	var inDir, inConfig []appservice.File
	for _, f := range files {
		var reg struct {
			ID string `yaml:"id"`
		}
		content, err := os.ReadFile(f.Path)
		readable := err == nil && yaml.Unmarshal(content, &reg) == nil && reg.ID != ""
		switch {
		case readable && reg.ID == asID && f.ConfigKey != "":
			inConfig = append(inConfig, f)
		case readable && reg.ID == asID, !readable && f.ConfigKey == "" && filepath.Base(f.Path) == asID+".yaml":
			inDir = append(inDir, f)
		}
	}
	if len(inDir)+len(inConfig) == 0 {
		return fmt.Errorf("no appservice with id %q", asID)
	}
	for _, f := range inDir {
		if err := os.Remove(f.Path); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Removed appservice %q (%s); send the server SIGHUP (or restart it) to unload it\n", asID, f.Name)
	}
	if len(inConfig) > 0 {
		f := inConfig[0]
		return fmt.Errorf("appservice %q comes from %s, listed in %s of %s: remove it from that list to remove the appservice",
			asID, f.Name, f.ConfigKey, config.Path(*data))
	}
	return nil
}
