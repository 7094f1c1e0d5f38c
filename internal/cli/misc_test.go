package cli_test

import (
	"strings"
	"testing"

	"github.com/coil-net/coil/events"
)

// A log that does not decode is a plain failure (exit 1), with the reason.
func TestCorruptLogIsFailure(t *testing.T) {
	e := newEnv(t)
	k := events.NewKeys("")
	ctx := t.Context()
	if _, err := e.cli.Put(ctx, k.Event(events.ClusterStream, 1), "garbage"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Put(ctx, k.Head(events.ClusterStream), string(events.EncodeHead(events.Version{Seq: 1}))); err != nil {
		t.Fatal(err)
	}
	e.fails(1, []string{"pool", "list"}, "replay cluster", "corrupt")
}

func TestPrefixSeparatesInstallations(t *testing.T) {
	e := newEnv(t)
	e.ok("--etcd-prefix", "/other/", "pool", "create", "p", "10.0.0.0/16")
	if out := e.ok("pool", "list"); len(lines(out)) != 1 {
		t.Fatalf("pool under /other/ visible under /coil/:\n%s", out)
	}
	if out := e.ok("--etcd-prefix", "/other", "pool", "list"); !strings.Contains(out, "10.0.0.0/16") {
		t.Fatalf("pool not listed under /other:\n%s", out)
	}
	e.fails(2, []string{"--etcd-prefix", "coil", "pool", "list"}, `--etcd-prefix "coil": must start with /`)
}

func TestHelp(t *testing.T) {
	r := runArgs(t, "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "Exit codes") {
		t.Fatalf("--help: exit %d, stdout %q", r.code, r.stdout)
	}
	r = runArgs(t, "pool", "create", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--block-size-bits") {
		t.Fatalf("pool create --help: exit %d, stdout %q", r.code, r.stdout)
	}
	checkFail(t, runArgs(t, "frobnicate"), 2, nil, `unknown command "frobnicate" for "coilctl"`)
	checkFail(t, runArgs(t, "node"), 2, nil, `"coilctl node" needs a subcommand (one of: list, reclaim)`)
}

// TestHostileTextIsEscaped: text that the log holds (written by a node, or by anyone with
// etcd access) reaches coilctl's tables and text output escaped: no terminal control,
// tab or newline from a pod name gets through.
func TestHostileTextIsEscaped(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "p", "198.18.0.0/24", "--block-size-bits", "4")
	n, _ := e.startNode("n1")
	hostile := "evil\x1b[2J\tname\n\u202e"
	a := e.alloc(n, "c1", "p", hostile)
	want := `ns/evil\x1b[2J\tname\n\u202e`
	for _, args := range [][]string{
		{"address", "list"},
		{"address", "show", a.Addrs[0].String()},
	} {
		out := e.ok(args...)
		if !strings.Contains(out, want) {
			t.Errorf("coilctl %s: output %q does not hold the escaped name %q", strings.Join(args, " "), out, want)
		}
		if strings.ContainsAny(out, "\x1b\u202e") || strings.Contains(out, "\tname") {
			t.Errorf("coilctl %s: raw control text in output %q", strings.Join(args, " "), out)
		}
	}
}
