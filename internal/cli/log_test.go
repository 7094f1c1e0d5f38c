package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coil-net/coil/internal/cli"
)

// coilctl log export | verify | import | snapshot | archive, end to end through the CLI.
func TestLogCommands(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "default", "10.30.0.0/24", "--block-size-bits", "3", noSkipNB)
	n1, _ := e.startNode("n1")
	for _, id := range []string{"a1", "a2", "a3", "a4"} {
		e.alloc(n1, id, "default", id)
	}
	dir := t.TempDir()
	exp := filepath.Join(dir, "export.jsonl")
	out := e.ok("log", "export", exp)
	if !strings.Contains(out, "exported") || !strings.Contains(out, exp) {
		t.Fatalf("export output %q", out)
	}
	stdout := e.ok("log", "export", "-")
	if !strings.HasPrefix(stdout, `{"coilLogExport":1,"kind":"export"`) {
		t.Fatalf("export to stdout starts %q", stdout[:min(80, len(stdout))])
	}
	if got := e.ok("log", "verify"); !strings.Contains(got, "live log at revision") {
		t.Fatalf("verify: %q", got)
	}
	if got := e.ok("log", "verify", "--file", exp); !strings.Contains(got, "ok") {
		t.Fatalf("verify --file: %q", got)
	}
	if got := e.ok("-o", "json", "log", "verify", "--file", exp, "--then-live"); !strings.Contains(got, `"node/n1"`) {
		t.Fatalf("verify --then-live -o json: %q", got)
	}

	// Tampered: exit 1 naming stream and sequence; import refuses.
	raw, err := os.ReadFile(exp)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.jsonl")
	tampered := strings.Replace(string(raw), `"addrs":["10.30.0.1"]`, `"addrs":["10.30.0.7"]`, 1)
	if tampered == string(raw) {
		t.Fatalf("no 10.30.0.1 in the export:\n%s", raw)
	}
	if err := os.WriteFile(bad, []byte(tampered), 0o600); err != nil {
		t.Fatal(err)
	}
	e.fails(cli.ExitFailure, []string{"log", "verify", "--file", bad}, "chain broken at node/n1 #")

	// Import into a non-empty etcd: refused (4). Into a fresh one: ok, then verify.
	e.fails(cli.ExitRefused, []string{"log", "import", exp}, "already holds a Coil log", "--force")
	f := newEnv(t)
	f.fails(cli.ExitFailure, []string{"log", "import", bad}, "chain broken at node/n1 #")
	if got := f.ok("log", "import", exp); !strings.Contains(got, "imported") {
		t.Fatalf("import: %q", got)
	}
	f.ok("log", "verify")
	if a, b := e.ok("-o", "json", "address", "list"), f.ok("-o", "json", "address", "list"); a != b {
		t.Fatalf("addresses differ after import:\n%s\n%s", a, b)
	}

	// Snapshot, archive before it, verify the join.
	out = e.ok("log", "snapshot")
	if row(t, out, "node/n1")[2] != "written" {
		t.Fatalf("snapshot: %q", out)
	}
	out = e.ok("log", "snapshot", "--stream", "node/n1")
	if !strings.Contains(out, "unchanged") {
		t.Fatalf("second snapshot: %q", out)
	}
	e.alloc(n1, "a5", "default", "a5")
	arch := filepath.Join(dir, "archive.jsonl")
	out = e.ok("log", "archive", "--before", "2100-01-01T00:00:00Z", "--to", arch, "--yes")
	if !strings.Contains(out, "archived") || !strings.Contains(out, "deleted from etcd") {
		t.Fatalf("archive: %q", out)
	}
	e.ok("log", "verify")
	e.ok("log", "verify", "--file", arch, "--then-live")
	e.fails(cli.ExitRefused, []string{"log", "archive", "--before", "5", "--to", arch}, "exists")
	e.fails(cli.ExitUsage, []string{"log", "archive", "--to", filepath.Join(dir, "x")}, "--before")
	// Readers start at the snapshots: listings and pool changes still work after archiving.
	if out := e.ok("address", "list"); !strings.Contains(out, "a5") {
		t.Fatalf("address list after archive: %q", out)
	}
	e.ok("pool", "create", "more", "10.31.0.0/24", noSkipNB)
	if out := e.ok("pool", "list"); !strings.Contains(out, "more") {
		t.Fatalf("pool list after archive: %q", out)
	}
}
