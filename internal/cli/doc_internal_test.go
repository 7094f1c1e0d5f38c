package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coil-net/coil/internal/testutil"
)

// TestCommandsDocumented: every coilctl command and every flag it takes is documented
// (a command under a "### `coilctl ...`" heading of docs/coilctl.md, or for the log
// commands in operations.md's table of them; a flag anywhere in the two pages as --NAME),
// and every command a heading names exists, so that the pages operators script against
// stay the whole contract.
func TestCommandsDocumented(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(testutil.Root(t), "docs", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// The log commands are described in operations.md, in a table of their own
	// (coilctl.md's "coilctl log ..." points there).
	coilctl, operations := read("coilctl.md"), read("operations.md")
	doc := coilctl + operations
	var headings []string
	for _, line := range strings.Split(coilctl, "\n") {
		if strings.HasPrefix(line, "### ") {
			headings = append(headings, line)
		}
	}
	for _, line := range strings.Split(operations, "\n") {
		if strings.HasPrefix(line, "| `coilctl log ") {
			headings = append(headings, line)
		}
	}
	// A heading names a command as "`coilctl WORD WORD... " up to the first argument
	// (upper case), option, or punctuation.
	named := map[string]bool{}
	cmdRe := regexp.MustCompile("`coilctl((?: [a-z][a-z-]*)+)")
	for _, h := range headings {
		for _, m := range cmdRe.FindAllStringSubmatch(h, -1) {
			named[strings.TrimSpace(m[1])] = true
		}
	}
	root := (&app{}).rootCommand()
	exists := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), "coilctl")
		path = strings.TrimSpace(path)
		// A group (a command with subcommands) needs no heading of its own unless it
		// does something besides listing them (coilctl cluster version does).
		if c.Runnable() && path != "" && (!c.HasSubCommands() || named[path]) {
			exists[path] = true
			if !named[path] {
				t.Errorf("docs/coilctl.md: no heading names `coilctl %s`", path)
			}
			c.LocalFlags().VisitAll(func(f *pflag.Flag) {
				if !strings.Contains(doc, "--"+f.Name) {
					t.Errorf("docs/coilctl.md: `coilctl %s --%s` is not documented", path, f.Name)
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if !strings.Contains(doc, "--"+f.Name) {
			t.Errorf("docs/coilctl.md: global flag --%s is not documented", f.Name)
		}
	})
	for path := range named {
		if !exists[path] {
			t.Errorf("docs/coilctl.md names `coilctl %s`, which is not a command", path)
		}
	}
	if len(exists) < 20 {
		t.Fatalf("found only %d commands: the walk is broken", len(exists))
	}
}
