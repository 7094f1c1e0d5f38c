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
