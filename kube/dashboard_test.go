package kube_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coil-net/coil/internal/testutil"
)

var promMetric = regexp.MustCompile(`\bcoil_[a-z0-9_]+\b`)

type dashPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// TestGrafanaDashboardMetrics: every query of deploy/grafana/coil-dashboard.json names
// only metrics that coild or coil-controller export. docs/metrics.md is the list of
// exported metrics (daemon.TestKubeLeaksAndMetrics and TestControllerMetricsDocumented
// scrape the real endpoints and fail if the two differ); a histogram may be queried
// through its _bucket, _sum and _count series. Every documented metric is on the
// dashboard, so a new metric gets a panel.
func TestGrafanaDashboardMetrics(t *testing.T) {
	root := testutil.Root(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "coil-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string      `json:"uid"`
		Title  string      `json:"title"`
		Panels []dashPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard lacks uid, title or panels")
	}
	exported := map[string]bool{}
	for _, section := range []string{"coild", "coil-controller"} {
		for _, n := range testutil.DocumentedMetrics(t, section) {
			exported[n] = true
		}
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.Title == "" {
			t.Errorf("panel %d (%q) lacks a title or gridPos", p.ID, p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") || strings.Count(q.Expr, "{") != strings.Count(q.Expr, "}") {
				t.Errorf("panel %q query %s: unbalanced brackets: %s", p.Title, q.RefID, q.Expr)
			}
			names := promMetric.FindAllString(q.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q query %s names no coil_ metric: %s", p.Title, q.RefID, q.Expr)
			}
			for _, n := range names {
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if s, ok := strings.CutSuffix(n, suf); ok && exported[s] {
						base = s
					}
				}
				if !exported[base] {
					t.Errorf("panel %q query %s names %s, which neither coild nor coil-controller exports (docs/metrics.md)", p.Title, q.RefID, n)
				}
				used[base] = true
			}
		}
	}
	for n := range exported {
		if !used[n] {
			t.Errorf("metric %s is exported but on no panel of the dashboard", n)
		}
	}
}
