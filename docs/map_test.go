// Package docs holds the project's documentation; its tests keep parts of it true to the
// code.
package docs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMapNamesEveryPackage fails when a package of the module is missing from the map of
// the code in design.md, so a newcomer who reads the map finds every package. A package
// counts as named when the map section holds its path in backquotes (with or without a
// trailing slash); a command under cmd/ counts when the cmd/ row names it.
func TestMapNamesEveryPackage(t *testing.T) {
	design, err := os.ReadFile("design.md")
	if err != nil {
		t.Fatal(err)
	}
	section := mapSection(t, string(design))
	cmdRow := ""
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| `cmd/` |") {
			cmdRow = line
		}
	}
	if cmdRow == "" {
		t.Fatal("design.md: the map has no `cmd/` row")
	}
	for _, pkg := range modulePackages(t, "..") {
		named := strings.Contains(section, "`"+pkg+"`") || strings.Contains(section, "`"+pkg+"/`")
		if cmd, ok := strings.CutPrefix(pkg, "cmd/"); ok {
			named = named || strings.Contains(cmdRow, "`"+cmd+"`")
		}
		if !named {
			t.Errorf("design.md, \"Map of the code\": package %s is not named; add it to the map", pkg)
		}
	}
}

// mapSection is design.md's "Map of the code", up to the next heading of its level.
func mapSection(t *testing.T, doc string) string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "\n## Map of the code\n")
	if !ok {
		t.Fatal(`design.md: no "## Map of the code" section`)
	}
	if i := strings.Index(rest, "\n## "); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// modulePackages lists the directories below root that hold Go files of the main module:
// not in a nested module (a directory with its own go.mod), testdata, or a hidden or
// underscore directory (which the go tool ignores too).
func modulePackages(t *testing.T, root string) []string {
	t.Helper()
	var pkgs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root {
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" {
				return filepath.SkipDir
			}
			if _, statErr := os.Stat(filepath.Join(path, "go.mod")); statErr == nil {
				return filepath.SkipDir
			}
		}
		goFiles, globErr := filepath.Glob(filepath.Join(path, "*.go"))
		if globErr != nil {
			return globErr
		}
		if len(goFiles) > 0 && path != root {
			rel, relErr := filepath.Rel(root, path)
			if relErr != nil {
				return relErr
			}
			pkgs = append(pkgs, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("found only %d packages below %s: is the test run from docs/?", len(pkgs), root)
	}
	return pkgs
}
