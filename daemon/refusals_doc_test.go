package daemon_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coil-net/coil/internal/testutil"
)

// refusalTable returns the rows of the "what coild refuses and why" table of a doc (the
// lines between the refusals markers).
func refusalTable(t *testing.T, root, doc string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs", doc))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "<!-- refusals")
	end := strings.Index(s, "<!-- /refusals -->")
	if start < 0 || end < start {
		t.Fatalf("docs/%s has no refusals table (<!-- refusals ... --> ... <!-- /refusals -->)", doc)
	}
	lines := strings.Split(strings.TrimSpace(s[start:end]), "\n")
	return lines[1:] // without the opening marker, which names the other doc
}

// TestRefusalTablesAgree: docs/coild.md and docs/cni.md carry the same "what coild
// refuses and why" table, and every test it names exists (`dir.TestName`, dir relative
// to the repository).
func TestRefusalTablesAgree(t *testing.T) {
	root := testutil.Root(t)
	coild, cni := refusalTable(t, root, "coild.md"), refusalTable(t, root, "cni.md")
	if strings.Join(coild, "\n") != strings.Join(cni, "\n") {
		t.Errorf("the refusal tables of docs/coild.md and docs/cni.md differ:\ncoild.md:\n%s\ncni.md:\n%s",
			strings.Join(coild, "\n"), strings.Join(cni, "\n"))
	}
	if len(coild) < 3 {
		t.Fatalf("refusal table has no rows")
	}
	ref := regexp.MustCompile("`([a-z0-9/]+)\\.(Test[A-Za-z0-9_]+)`")
	for i, row := range coild[2:] {
		cells := strings.Split(strings.Trim(row, "| "), " | ")
		if len(cells) != 4 {
			t.Errorf("row %d has %d cells, want 4 (input, answer, code, test): %s", i+1, len(cells), row)
			continue
		}
		tests := ref.FindAllStringSubmatch(cells[3], -1)
		if len(tests) == 0 {
			t.Errorf("row %d names no test (`dir.TestName`): %s", i+1, cells[0])
		}
		for _, m := range tests {
			dir, name := m[1], m[2]
			files, _ := filepath.Glob(filepath.Join(root, dir, "*_test.go"))
			found := false
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err == nil && strings.Contains(string(b), "func "+name+"(") {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("row %d names %s.%s, which does not exist", i+1, dir, name)
			}
		}
	}
}
