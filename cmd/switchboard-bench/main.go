// Command switchboard-bench is the homeserver benchmark `make bench` runs. It
// starts a real `switchboard run` on a throwaway data directory (loopback
// only), drives it with mautrix clients and prints one greppable line per
// figure. The accounts suite's lines start with "bench homeserver":
//
//	bench homeserver db=sqlite logins_per_sec=… login_p50_ms=… login_p99_ms=… errors=0
//	bench homeserver db=sqlite whoami_per_sec=… whoami_p50_ms=… whoami_p99_ms=… errors=0
//	bench homeserver db=sqlite rss_idle_mb=… rss_after_load_mb=… rss_peak_mb=…
//
// The messaging suite (messaging.go) runs on a fresh server after it; its
// lines start with "bench messaging" (send throughput, /sync fan-out,
// initial sync, sequential sends, memory). The appservice suite
// (appservice.go) runs on a third server; its lines start with
// "bench appservice" (transaction throughput and latency to one appservice,
// backlog drain). The framework suite (framework.go) runs after it; its
// lines start with "bench framework" (a no-op bot on the appservice
// framework: events handled per second live and from a backlog, memory per
// ghost). The webhooks suite (webhooks.go) runs after it; its lines start with
// "bench webhooks" (webhook requests accepted per second, POST → sync
// latency at a fixed rate). The irc suite (irc.go) runs after it; its lines
// start with "bench irc" (puppets of the IRC bridge against a local ngircd:
// connect and reconnect times, memory per puppet, relay latency).
//
// It reports; it does not pass or fail on a figure. It exits non-zero only
// when the server cannot be started or stopped cleanly, or when every
// request of a phase failed. docs/performance.md records the figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type options struct {
	binary   string
	clients  int
	duration time.Duration
	database string
	keep     bool
	// suite selects the benchmarks: all, accounts, messaging, appservice, framework, webhooks or irc.
	suite      string
	messaging  messagingOptions
	appservice appserviceOptions
	framework  frameworkOptions
	webhooks   webhooksOptions
	irc        ircOptions
	// serverPerf, when set, is where perf(1) records the server process's
	// CPU profile during the load phases (hidden flag --perf-record: a
	// diagnosis aid, see docs/performance.md).
	serverPerf string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("switchboard-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.binary, "binary", "bin/switchboard", "path to the switchboard binary to benchmark")
	fs.IntVar(&o.clients, "clients", 32, "concurrent clients")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each load phase")
	fs.StringVar(&o.database, "database", "", "database URI for the server (default: SQLite in the temp data dir; postgres://… to bench PostgreSQL — use a throwaway database)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp data dir (config, database, server.log) after the run")
	fs.StringVar(&o.suite, "suite", "all", "benchmarks to run: all, accounts (logins, whoami), messaging (sends, /sync), appservice (transactions), framework (bot on the appservice framework), webhooks (webhook bridge) or irc (IRC bridge puppets against ngircd)")
	addMessagingFlags(fs, &o.messaging)
	addAppserviceFlags(fs, &o.appservice)
	addFrameworkFlags(fs, &o.framework)
	addWebhooksFlags(fs, &o.webhooks)
	addIRCFlags(fs, &o.irc)
	fs.StringVar(&o.serverPerf, "perf-record", "", "")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: switchboard-bench [--binary PATH] [--suite all|accounts|messaging|appservice|framework|webhooks|irc] [--clients N] [--duration D] [--database URI] [--keep]")
		fs.VisitAll(func(f *flag.Flag) {
			if f.Usage == "" { // hidden diagnosis flags
				return
			}
			def := ""
			if f.DefValue != "" && f.DefValue != "false" {
				def = " (default " + f.DefValue + ")"
			}
			fmt.Fprintf(stderr, "  --%s\n    \t%s%s\n", f.Name, f.Usage, def)
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "switchboard-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if o.clients < 1 || o.duration <= 0 {
		fmt.Fprintln(stderr, "switchboard-bench: --clients must be ≥ 1 and --duration > 0")
		return 2
	}
	if o.suite != "all" && o.suite != "accounts" && o.suite != "messaging" && o.suite != "appservice" && o.suite != "framework" && o.suite != "webhooks" && o.suite != "irc" {
		fmt.Fprintln(stderr, "switchboard-bench: --suite must be all, accounts, messaging, appservice, framework, webhooks or irc")
		return 2
	}
	if err := errors.Join(o.messaging.validate(), o.appservice.validate(), o.framework.validate(), o.webhooks.validate(), o.irc.validate()); err != nil {
		fmt.Fprintf(stderr, "switchboard-bench: %v\n", err)
		return 2
	}
	if o.database != "" && !strings.HasPrefix(o.database, "postgres://") && !strings.HasPrefix(o.database, "postgresql://") && !strings.HasPrefix(o.database, "sqlite:") {
		fmt.Fprintln(stderr, "switchboard-bench: --database must be sqlite:FILE or a postgres:// URI")
		return 2
	}
	bin, err := filepath.Abs(o.binary)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintf(stderr, "switchboard-bench: --binary: %v (build it with `make build`)\n", err)
		return 1
	}
	o.binary = bin

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{opts: o, out: stdout, errOut: stderr, label: dbLabel(o.database)}
	if err := b.run(ctx); err != nil {
		fmt.Fprintf(stderr, "switchboard-bench: %v\n", err)
		return 1
	}
	return 0
}

func dbLabel(uri string) string {
	if strings.HasPrefix(uri, "postgres") {
		return "postgres"
	}
	return "sqlite"
}

// bench is one run: a server and the phases run against it.
type bench struct {
	opts   options
	out    io.Writer
	errOut io.Writer
	label  string // db=… in every line
	srv    *server
}

// report prints one figure line.
func (b *bench) report(format string, args ...any) {
	fmt.Fprintf(b.out, "bench homeserver db=%s "+format+"\n", append([]any{b.label}, args...)...)
}

// run runs the selected suites, each on its own server so that one's
// memory figures do not carry over into the other's.
func (b *bench) run(ctx context.Context) error {
	if b.opts.suite == "all" || b.opts.suite == "accounts" {
		if err := b.runAccounts(ctx); err != nil {
			return err
		}
	}
	if b.opts.suite == "all" || b.opts.suite == "messaging" {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		if err := b.runMessaging(ctx); err != nil {
			return err
		}
	}
	if b.opts.suite == "all" || b.opts.suite == "appservice" {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		if err := b.runAppservice(ctx); err != nil {
			return err
		}
	}
	if b.opts.suite == "all" || b.opts.suite == "framework" {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		if err := b.runFramework(ctx); err != nil {
			return err
		}
	}
	if b.opts.suite == "all" || b.opts.suite == "webhooks" {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		if err := b.runWebhooks(ctx); err != nil {
			return err
		}
	}
	if b.opts.suite == "all" || b.opts.suite == "irc" {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return b.runIRC(ctx)
	}
	return nil
}

// startSuite gives a suite its own data directory and server; prepare (may
// be nil) runs once the server is configured, before it starts. done kills
// the server if the suite has not stopped it, and removes the directory
// (unless --keep).
func (b *bench) startSuite(ctx context.Context, name string, prepare func() error) (idle procStatus, done func(), err error) {
	dir, err := os.MkdirTemp("", "switchboard-bench-"+name+"-")
	if err != nil {
		return procStatus{}, nil, fmt.Errorf("temp dir: %w", err)
	}
	done = func() {
		if b.srv != nil {
			b.srv.kill() // a no-op once the suite has stopped it
		}
		if b.opts.keep {
			fmt.Fprintf(b.errOut, "switchboard-bench: kept %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}
	fail := func(err error) (procStatus, func(), error) {
		done()
		return procStatus{}, nil, err
	}
	if b.srv, err = setupServer(ctx, b.opts, dir); err != nil {
		return fail(err)
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			return fail(err)
		}
	}
	if err := b.srv.start(ctx); err != nil {
		return fail(err)
	}
	if idle, err = readProcStatus(b.srv.pid()); err != nil {
		return fail(err)
	}
	return idle, done, nil
}

// runAccounts is the accounts suite: logins and whoami.
func (b *bench) runAccounts(ctx context.Context) (err error) {
	idle, done, err := b.startSuite(ctx, "accounts", nil)
	if err != nil {
		return err
	}
	defer done()
	hash := b.srv.cfgHashing
	b.report("clients=%d duration=%s cpus=%d argon2id_memory_kib=%d argon2id_iterations=%d argon2id_parallelism=%d",
		b.opts.clients, b.opts.duration, runtime.NumCPU(), hash.MemoryKiB, hash.Iterations, hash.Parallelism)

	users, err := b.srv.createUsers(ctx, b.opts.clients)
	if err != nil {
		return err
	}

	stopPerf, err := b.startPerf()
	if err != nil {
		return err
	}
	login := b.loginPhase(ctx, users)
	b.report("logins_per_sec=%.1f login_p50_ms=%.2f login_p99_ms=%.2f logins=%d errors=%d",
		login.perSecond(), login.percentileMS(50), login.percentileMS(99), login.ok(), login.errors)
	login.printErrors(b.errOut, "login")

	whoami := b.whoamiPhase(ctx, users)
	b.report("whoami_per_sec=%.1f whoami_p50_ms=%.3f whoami_p99_ms=%.3f requests=%d errors=%d",
		whoami.perSecond(), whoami.percentileMS(50), whoami.percentileMS(99), whoami.ok(), whoami.errors)
	whoami.printErrors(b.errOut, "whoami")
	stopPerf()

	after, err := readProcStatus(b.srv.pid())
	if err != nil {
		return err
	}
	b.report("rss_idle_mb=%.1f rss_after_load_mb=%.1f rss_peak_mb=%.1f",
		mib(idle.rssKiB), mib(after.rssKiB), mib(after.hwmKiB))

	code, took, stopErr := b.srv.stop(15 * time.Second)
	b.report("shutdown_ms=%d exit_code=%d", took.Milliseconds(), code)

	var problems []string
	if stopErr != nil {
		problems = append(problems, stopErr.Error())
	}
	if ctx.Err() != nil {
		problems = append(problems, "interrupted")
	}
	if login.ok() == 0 {
		problems = append(problems, "every login failed")
	}
	if whoami.ok() == 0 {
		problems = append(problems, "every whoami request failed")
	}
	if len(problems) > 0 {
		b.srv.printLogTail(b.errOut)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func mib(kib int64) float64 { return float64(kib) / 1024 }
