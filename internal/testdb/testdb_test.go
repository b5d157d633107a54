package testdb_test

import (
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	_ "github.com/lib/pq"
	_ "github.com/mattn/go-sqlite3"

	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// open opens a testdb URI with the driver for its scheme.
func open(t *testing.T, uri string) *sql.DB {
	t.Helper()
	driver, dsn := "postgres", uri
	if path, ok := strings.CutPrefix(uri, "sqlite:"); ok {
		driver, dsn = "sqlite3", path
	} else if !strings.HasPrefix(uri, "postgres://") {
		t.Fatalf("URI %q is neither sqlite: nor postgres://", uri)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", uri, err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("ping %s: %v", uri, err)
	}
	return db
}

// roundTrip proves the database is fresh and writable: the table must not
// exist yet, and what is written must be read back.
func roundTrip(t *testing.T, db *sql.DB, dialect, value string) {
	t.Helper()
	if _, err := db.Exec(`CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)`); err != nil {
		t.Fatalf("create table (database not fresh?): %v", err)
	}
	insert := `INSERT INTO notes (id, body) VALUES (?, ?)`
	query := `SELECT body FROM notes WHERE id = ?`
	if dialect == testdb.Postgres {
		insert = `INSERT INTO notes (id, body) VALUES ($1, $2)`
		query = `SELECT body FROM notes WHERE id = $1`
	}
	if _, err := db.Exec(insert, 1, value); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var got string
	if err := db.QueryRow(query, 1).Scan(&got); err != nil {
		t.Fatalf("select: %v", err)
	}
	if got != value {
		t.Fatalf("read back %q, want %q", got, value)
	}
}

func TestForEach(t *testing.T) {
	var ran []string
	testdb.ForEach(t, func(t *testing.T, uri string) {
		dialect := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
		ran = append(ran, dialect)
		db := open(t, uri)

		// The URI must reach the engine the subtest is named after.
		var version string
		switch dialect {
		case testdb.SQLite:
			if err := db.QueryRow(`SELECT sqlite_version()`).Scan(&version); err != nil {
				t.Fatalf("sqlite_version: %v", err)
			}
		case testdb.Postgres:
			if !strings.Contains(uri, "sslmode=disable") {
				t.Errorf("URI %q lacks sslmode=disable", uri)
			}
			if err := db.QueryRow(`SELECT version()`).Scan(&version); err != nil {
				t.Fatalf("version(): %v", err)
			}
			if !strings.HasPrefix(version, "PostgreSQL ") {
				t.Fatalf("version() = %q, not PostgreSQL", version)
			}
		default:
			t.Fatalf("unexpected subtest name %q", dialect)
		}
		t.Logf("%s %s", dialect, version)
		roundTrip(t, db, dialect, "héllo, "+dialect+" ☃")
	})
	// The postgres subtest skips before fn runs only when PostgreSQL is
	// missing, which CI does not allow.
	want := []string{testdb.SQLite, testdb.Postgres}
	if len(ran) == 1 && os.Getenv("CI") != "true" {
		want = want[:1]
	}
	if fmt.Sprint(ran) != fmt.Sprint(want) {
		t.Errorf("ForEach ran %v, want %v", ran, want)
	}
}

func TestSQLiteURIFresh(t *testing.T) {
	a, b := testdb.SQLiteURI(t), testdb.SQLiteURI(t)
	if a == b {
		t.Fatalf("two SQLiteURI calls gave the same URI %q", a)
	}
	for _, uri := range []string{a, b} {
		path, ok := strings.CutPrefix(uri, "sqlite:")
		if !ok {
			t.Fatalf("SQLiteURI = %q, want sqlite: prefix", uri)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("%s exists before first use (err %v)", path, err)
		}
	}
	if got := testdb.URI(t, testdb.SQLite); !strings.HasPrefix(got, "sqlite:") {
		t.Errorf("URI(sqlite) = %q", got)
	}
}

func TestPostgresURIIsolated(t *testing.T) {
	uriA, uriB := testdb.PostgresURI(t), testdb.PostgresURI(t)
	if uriA == uriB {
		t.Fatalf("two PostgresURI calls gave the same URI %q", uriA)
	}
	a, b := open(t, uriA), open(t, uriB)

	var nameA, nameB string
	if err := a.QueryRow(`SELECT current_database()`).Scan(&nameA); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(`SELECT current_database()`).Scan(&nameB); err != nil {
		t.Fatal(err)
	}
	if nameA == nameB {
		t.Fatalf("both URIs connect to database %q", nameA)
	}

	roundTrip(t, a, testdb.Postgres, "only in A")
	// What A wrote must be invisible from B, and B must be free to create
	// the same table.
	var reg sql.NullString
	if err := b.QueryRow(`SELECT to_regclass('notes')::text`).Scan(&reg); err != nil {
		t.Fatal(err)
	}
	if reg.Valid {
		t.Fatalf("table created in %s is visible in %s as %q", nameA, nameB, reg.String)
	}
	roundTrip(t, b, testdb.Postgres, "only in B")
}

func TestPostgresURIDroppedAfterTest(t *testing.T) {
	var name string
	t.Run("owner", func(t *testing.T) {
		db := open(t, testdb.PostgresURI(t))
		if err := db.QueryRow(`SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
		// Hold a connection that is never returned, as a test that forgets
		// to close a row set would: the drop must still succeed.
		if _, err := db.Conn(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
	if t.Skipped() || name == "" {
		t.Skip("owner subtest did not get a database")
	}
	db := open(t, testdb.PostgresURI(t))
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %q still exists after its test ended", name)
	}
}

func TestPostgresParallel(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			uri := testdb.URI(t, testdb.Postgres)
			mu.Lock()
			dup := seen[uri]
			seen[uri] = true
			mu.Unlock()
			if dup {
				t.Fatalf("URI %q handed out twice", uri)
			}
			roundTrip(t, open(t, uri), testdb.Postgres, fmt.Sprint("row ", i))
		})
	}
}
