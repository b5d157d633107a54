package homeserver_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestMetricsOnSeparateListener(t *testing.T) {
	// On another loopback address than the client listener (127.0.0.1:0,
	// bound after this): the kernel may hand a port just freed here to
	// that listener.
	ln, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	srv := hstest.Start(t, testdb.SQLiteURI(t), func(c *config.Config) {
		c.Metrics.Enabled = true
		c.Metrics.Listen = metricsAddr
	})
	cli := srv.NewUser("metrics")
	if _, err := cli.Whoami(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Not on the client listener: metrics may reveal usage patterns.
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the client listener: HTTP %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `switchboard_http_requests_total{method="GET",route="/_matrix/client/v3/account/whoami",status="200"} 1`
	if !strings.Contains(string(body), want) {
		t.Fatalf("metrics lack %q:\n%s", want, body)
	}
	if !strings.Contains(string(body), "process_resident_memory_bytes") {
		t.Fatal("metrics lack process collector")
	}
}

func TestMetricsOffByDefault(t *testing.T) {
	if config.Default().Metrics.Enabled {
		t.Fatal("metrics must be off by default")
	}
}
