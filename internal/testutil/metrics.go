package testutil

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	docMetricRow  = regexp.MustCompile("(?m)^\\| `(coil_[a-z_]+)` \\|")
	servedMetricT = regexp.MustCompile(`(?m)^# TYPE (coil_[a-z_]+) `)
)

// DocumentedMetrics returns the metric names in the table under "## section" of
// docs/metrics.md.
func DocumentedMetrics(t testing.TB, section string) []string {
	t.Helper()
	root, ok := RepoRoot()
	if !ok {
		t.Fatal("repository root not found")
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n## "+section+"\n")
	if !ok {
		t.Fatalf("docs/metrics.md has no section %q", section)
	}
	rest, _, _ = strings.Cut(rest, "\n## ")
	var names []string
	for _, m := range docMetricRow.FindAllStringSubmatch(rest, -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatalf("no metrics in section %q", section)
	}
	return names
}

// CheckDocumented fails the test unless the scraped Prometheus text serves exactly the
// documented coil_ metrics: every documented one, and no undocumented one.
func CheckDocumented(t testing.TB, text string, documented []string) {
	t.Helper()
	doc := map[string]bool{}
	for _, n := range documented {
		doc[n] = true
		if !strings.Contains(text, "\n# TYPE "+n+" ") {
			t.Errorf("documented metric %s not served", n)
		}
	}
	for _, m := range servedMetricT.FindAllStringSubmatch(text, -1) {
		if !doc[m[1]] {
			t.Errorf("metric %s served but not documented in docs/metrics.md", m[1])
		}
	}
}
