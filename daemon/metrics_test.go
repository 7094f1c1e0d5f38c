package daemon_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
)

// freeLoopbackAddr returns a loopback address with a port that was free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func scrape(t *testing.T, url string) (string, error) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), &httpError{resp.StatusCode}
	}
	return string(b), nil
}

type httpError struct{ code int }

func (e *httpError) Error() string { return "HTTP " + strconv.Itoa(e.code) }

// sample returns the value of the series whose line starts with series (name and
// labels exactly as exposed), or -1.
func sample(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	cfg := e.config()
	cfg.MetricsAddr = freeLoopbackAddr(t)
	e.startDaemon(cfg)
	base := "http://" + cfg.MetricsAddr

	var text string
	var last error
	testutil.Eventually(t, 20*time.Second, func() bool {
		text, last = scrape(t, base+"/metrics")
		return last == nil
	}, "scrape /metrics (last error %v)", &last)
	// Every metric is there from the start, except the per-pool allocation counter
	// (its pools are not known in advance).
	for _, name := range []string{"coil_cni_request_duration_seconds", "coil_address_releases_total", "coil_log_appends_total",
		"coil_log_append_conflicts_total", "coil_reconcile_actions_total", "coil_log_watch_revision"} {
		if !strings.Contains(text, "\n# TYPE "+name+" ") {
			t.Errorf("metric %s missing before any CNI call", name)
		}
	}
	if body, err := scrape(t, base+"/healthz"); err != nil || body != "ok\n" {
		t.Errorf("/healthz: %q %v", body, err)
	}

	ctx := context.Background()
	c, list := e.cni(), e.netList()
	_, podPath := e.pod("m")
	rt := podRT("feed0001", podPath)
	for range 2 { // a repeated ADD is not a second allocation
		if _, err := c.AddNetworkList(ctx, list, rt); err != nil {
			t.Fatalf("ADD: %v", err)
		}
	}
	if err := c.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		text, last = scrape(t, base+"/metrics")
		return last == nil && sample(text, `coil_address_releases_total{reason="cni_del"}`) == 1
	}, "the DEL's release counted (last error %v)", &last)

	for _, name := range []string{"coil_cni_request_duration_seconds", "coil_address_allocations_total", "coil_address_releases_total",
		"coil_log_appends_total", "coil_log_append_conflicts_total", "coil_reconcile_actions_total", "coil_log_watch_revision"} {
		if !strings.Contains(text, "\n# TYPE "+name+" ") {
			t.Errorf("metric %s missing", name)
		}
	}
	for series, want := range map[string]float64{
		`coil_address_allocations_total{pool="default"}`:                            1,
		`coil_cni_request_duration_seconds_count{command="ADD",result="ok"}`:        2,
		`coil_cni_request_duration_seconds_count{command="DEL",result="ok"}`:        1,
		`coil_reconcile_actions_total{action="export_add"}`:                         2, // the block's IPv4 and IPv6 routes
		`coil_log_append_conflicts_total{stream_kind="node"}`:                       0,
		`coil_cni_request_duration_seconds_count{command="ADD",result="try_again"}`: 0,
	} {
		if got := sample(text, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := sample(text, `coil_log_appends_total{result="ok",stream_kind="node"}`); got < 3 {
		t.Errorf("node appends %v, want at least 3 (registration, assignment, release)", got)
	}
	evs := e.nodeEvents()
	if got, last := sample(text, "coil_log_watch_revision"), evs[len(evs)-1].Revision; got < float64(last) {
		t.Errorf("coil_log_watch_revision = %v, want at least %d (the node's last event)", got, last)
	}
}
