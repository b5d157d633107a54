// Package testdb owns the databases that storage and end-to-end tests run on:
// a fresh SQLite file per test, and a fresh database per test on a throwaway
// PostgreSQL cluster that the test binary starts itself.
//
// Tests run against a real PostgreSQL rather than a mock because the two SQL
// dialects differ in ways only the real server reveals (types, locking,
// constraint errors). The cluster is started lazily, once per test binary, so
// packages that only use SQLite pay nothing; every test still gets its own
// empty database so tests can run in parallel without seeing each other's rows.
//
// A package whose tests call PostgresURI (directly or through URI or ForEach)
// must hand its TestMain to Main, which stops the cluster when the tests end:
//
//	func TestMain(m *testing.M) { testdb.Main(m) }
package testdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/switchboard-im/switchboard/internal/loopback"
	"github.com/switchboard-im/switchboard/internal/testpeer"
)

// Dialect names, used as subtest names by ForEach so that a failure reads as
// "TestX/postgres" and one dialect can be selected with -run 'TestX/sqlite'.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// dialects lists the dialects ForEach runs, in order.
var dialects = []string{SQLite, Postgres}

// Main runs the package's tests and then stops the throwaway PostgreSQL
// cluster, if a test started one, and removes its directory. Without it the
// postmaster would outlive the test binary. It calls os.Exit itself. Use as:
//
//	func TestMain(m *testing.M) { testdb.Main(m) }
func Main(m *testing.M) {
	mainActive.Store(true)
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "testdb: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// SQLiteURI returns "sqlite:" followed by the path of a file that does not
// exist yet, inside t.TempDir(), so each call is a brand-new database that is
// removed with the test.
func SQLiteURI(t testing.TB) string {
	t.Helper()
	return "sqlite:" + filepath.Join(t.TempDir(), "test.db")
}

// PostgresURI returns a postgres:// URI (sslmode=disable) of a brand-new, empty
// database created for this test on the test binary's throwaway cluster, which
// is started on first use. The database is dropped in t.Cleanup.
//
// When the PostgreSQL binaries are not installed the test is skipped with a
// message saying how to install them, except under CI=true, where a missing
// database must not turn into a silently green run, so the test fails.
func PostgresURI(t testing.TB) string {
	t.Helper()
	if !mainActive.Load() {
		t.Fatal("testdb: PostgresURI needs the package's TestMain to be " +
			"`func TestMain(m *testing.M) { testdb.Main(m) }` so the throwaway PostgreSQL cluster is stopped")
	}
	c, err := startCluster()
	if errors.Is(err, errNoPostgres) {
		testpeer.Missing(t, fmt.Sprintf("testdb: %v; skipping PostgreSQL test", err))
	}
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	if c.startedBy.CompareAndSwap(false, true) {
		t.Logf("testdb: started PostgreSQL cluster (%s) on 127.0.0.1:%d in %v, dir %s",
			c.bin, c.port, c.startTime.Round(time.Millisecond), c.dir)
	}

	name := dbName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)+c.createOpts); err != nil {
		t.Fatalf("testdb: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE closes connections the test forgot to close, which would
		// otherwise make DROP DATABASE fail.
		if _, err := c.admin.ExecContext(ctx, "DROP DATABASE "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("testdb: drop database %s: %v", name, err)
		}
	})
	return c.uri(name)
}

// URI returns SQLiteURI or PostgresURI for a dialect name, so table-driven
// tests can carry the dialect as data.
func URI(t testing.TB, dialect string) string {
	t.Helper()
	switch dialect {
	case SQLite:
		return SQLiteURI(t)
	case Postgres:
		return PostgresURI(t)
	}
	t.Fatalf("testdb: unknown dialect %q (want %q or %q)", dialect, SQLite, Postgres)
	return ""
}

// ForEach runs fn once per dialect as a subtest named after the dialect,
// passing a fresh database URI, so a storage test is written once and proven on
// both databases.
func ForEach(t *testing.T, fn func(t *testing.T, uri string)) {
	t.Helper()
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			fn(t, URI(t, d))
		})
	}
}

// errNoPostgres marks "PostgreSQL is not installed", the one start failure
// that skips rather than fails outside CI.
var errNoPostgres = errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found in " +
	debianRoot + "/<version>/bin or on PATH; install them with `apt-get install postgresql`")

const debianRoot = "/usr/lib/postgresql"

const (
	shmDir = "/dev/shm"
	// minShmFree keeps a small /dev/shm (Docker gives 64 MiB by default)
	// from being chosen: a cluster needs about 40 MiB plus 8 MiB per live
	// test database, and the server itself allocates shared memory there.
	minShmFree = 1 << 30
)

// Package state is unavoidable here: the cluster belongs to the whole test
// binary, shared by all its tests, and Main must find it to stop it.
var (
	mainActive   atomic.Bool
	clusterOnce  sync.Once
	theCluster   *cluster
	clusterErr   error
	dbCounter    atomic.Int64
	shutdownOnce sync.Once
)

// cluster is one running throwaway PostgreSQL server.
type cluster struct {
	bin     string // directory holding initdb and pg_ctl
	dir     string // temp dir owning everything below; removed by shutdown
	data    string
	logFile string
	port    int
	runAs   *user.User // nil: run the binaries as the current user
	admin   *sql.DB    // connected to the "postgres" database
	// createOpts ends CREATE DATABASE. PostgreSQL 15's default WAL_LOG
	// strategy copies the template through the WAL; FILE_COPY measured
	// about twice as fast on tmpfs (11ms vs 24ms) and 3.5x faster with 4
	// concurrent creates on ext4, with fsync=off.
	createOpts string
	startTime  time.Duration
	startedBy  atomic.Bool // whether the start has been logged to a test
}

func startCluster() (*cluster, error) {
	clusterOnce.Do(func() {
		theCluster, clusterErr = newCluster()
	})
	return theCluster, clusterErr
}

// shutdown stops the cluster if one was started; safe to call more than once.
func shutdown() error {
	var err error
	shutdownOnce.Do(func() {
		// Mark the cluster as used so a late PostgresURI cannot start a
		// new one that nobody would stop.
		clusterOnce.Do(func() { clusterErr = errors.New("cluster already shut down") })
		if theCluster != nil {
			err = theCluster.stop()
		}
	})
	return err
}

func newCluster() (*cluster, error) {
	begin := time.Now()
	bin, err := findBinaries(debianRoot, exec.LookPath)
	if err != nil {
		return nil, err
	}
	c := &cluster{bin: bin}

	// initdb and pg_ctl refuse to run as root, and sessions and CI run as
	// root: then run them as the postgres system user.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, so initdb must run as the postgres user, but: %w", err)
		}
		c.runAs = u
	}
	if c.dir, err = c.makeDir(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(c.dir)
		}
	}()
	c.data = filepath.Join(c.dir, "data")
	c.logFile = filepath.Join(c.dir, "postgres.log")
	socketDir := filepath.Join(c.dir, "sock")
	if err := os.Mkdir(socketDir, 0o700); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := c.chown(socketDir); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := c.run(ctx, "initdb", "-D", c.data, "-A", "trust", "-U", "postgres",
		"--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}

	// The free port is found by binding and closing, so another test binary
	// starting its own cluster at the same moment can take it first: retry
	// with a new port.
	var startErr error
	for attempt := 0; attempt < 4; attempt++ {
		if c.port, err = loopback.FreePort(); err != nil {
			return nil, err
		}
		os.Remove(c.logFile) // so the log checked below is this attempt's
		// Durability is worthless for a throwaway cluster; max_wal_size
		// bounds the RAM the WAL can take when the cluster is on tmpfs.
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"+
			" -c full_page_writes=off -c max_connections=200 -c max_wal_size=256MB", c.port, socketDir)
		out, err := c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.data, "-l", c.logFile, "-o", opts)
		if err == nil {
			startErr = nil
			break
		}
		startErr = fmt.Errorf("pg_ctl start on port %d: %w\n%s\nserver log:\n%s", c.port, err, out, tail(c.logFile))
		if !strings.Contains(tail(c.logFile), "could not bind") {
			break
		}
	}
	if startErr != nil {
		return nil, startErr
	}

	c.admin, err = sql.Open("postgres", c.uri("postgres"))
	if err == nil {
		err = c.admin.PingContext(ctx)
	}
	var version int
	if err == nil {
		err = c.admin.QueryRowContext(ctx, "SHOW server_version_num").Scan(&version)
	}
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("connect to throwaway cluster: %w", err)
	}
	if version >= 150000 {
		c.createOpts = " STRATEGY FILE_COPY"
	}
	c.startTime = time.Since(begin)
	ok = true
	return c, nil
}

func (c *cluster) uri(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

func (c *cluster) stop() error {
	if c.admin != nil {
		c.admin.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if out, e := c.run(ctx, "pg_ctl", "stop", "-w", "-m", "immediate", "-D", c.data); e != nil {
		err = fmt.Errorf("pg_ctl stop: %w\n%s", e, out)
	}
	if e := os.RemoveAll(c.dir); e != nil && err == nil {
		err = fmt.Errorf("remove cluster dir: %w", e)
	}
	return err
}

// makeDir creates the cluster's temp dir, owned by the user the server runs
// as, under a base that user can reach. The Unix socket path must also fit in
// sun_path (107 bytes), so a long TMPDIR falls back to /tmp.
//
// A RAM-backed /dev/shm is preferred over TMPDIR: on these machines' ext4
// (mounted with discard), initdb took 1.5s instead of 0.36s and CREATE
// DATABASE 300ms instead of 11ms, and every PostgreSQL test pays the latter.
func (c *cluster) makeDir() (string, error) {
	bases := []string{os.TempDir(), "/tmp"}
	if free, err := freeBytes(shmDir); err == nil && free >= minShmFree {
		bases = append([]string{shmDir}, bases...)
	}
	var problems []string
	for _, base := range bases {
		if len(base) > 60 {
			problems = append(problems, base+": too long for a Unix socket path")
			continue
		}
		if c.runAs != nil {
			if err := reachable(base, c.runAs); err != nil {
				problems = append(problems, err.Error())
				continue
			}
		}
		dir, err := os.MkdirTemp(base, "testdb-pg-")
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if err := c.chown(dir); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
		return dir, nil
	}
	return "", fmt.Errorf("no usable temp dir for the cluster: %s", strings.Join(problems, "; "))
}

func (c *cluster) chown(path string) error {
	if c.runAs == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, c.runAs.Username, err)
	}
	return nil
}

// run runs one of the cluster's binaries, as c.runAs when set, with PG*
// variables removed from the environment so a developer's PGDATA or PGPORT
// cannot redirect it to a real cluster.
func (c *cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	env := []string{"HOME=" + c.dir, "LC_ALL=C"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || k == "HOME" || strings.HasPrefix(k, "LC_") || k == "LANG" {
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = env
	if c.runAs != nil {
		if err := runAsUser(cmd, c.runAs); err != nil {
			return nil, err
		}
	}
	// pg_ctl start leaves the postmaster running; its output goes to the
	// log file (-l), but guard against a pipe held open by it anyway.
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

// findBinaries returns the directory holding initdb and pg_ctl: Debian's
// highest installed version under root, else the directory on PATH.
func findBinaries(root string, lookPath func(string) (string, error)) (string, error) {
	entries, _ := os.ReadDir(root)
	var versions []string
	for _, e := range entries {
		if _, err := parseVersion(e.Name()); err == nil && hasBinaries(filepath.Join(root, e.Name(), "bin")) {
			versions = append(versions, e.Name())
		}
	}
	if len(versions) > 0 {
		sort.Slice(versions, func(i, j int) bool {
			a, _ := parseVersion(versions[i])
			b, _ := parseVersion(versions[j])
			return a[0] < b[0] || a[0] == b[0] && a[1] < b[1]
		})
		return filepath.Join(root, versions[len(versions)-1], "bin"), nil
	}
	if p, err := lookPath("initdb"); err == nil {
		if p, err = filepath.EvalSymlinks(p); err == nil && hasBinaries(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	return "", errNoPostgres
}

// parseVersion parses Debian's version directory names: "15", "9.6".
func parseVersion(s string) ([2]int, error) {
	major, minor, hasMinor := strings.Cut(s, ".")
	var v [2]int
	var err error
	if v[0], err = strconv.Atoi(major); err != nil {
		return v, err
	}
	if hasMinor {
		if v[1], err = strconv.Atoi(minor); err != nil {
			return v, err
		}
	}
	return v, nil
}

func hasBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// dbName returns a unique database name that also says which test it belongs
// to, for reading pg_stat_activity or the server log. PostgreSQL truncates
// identifiers at 63 bytes, so the unique part comes first.
func dbName(testName string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "t%d_", dbCounter.Add(1))
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 63 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
