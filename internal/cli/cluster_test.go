package cli_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
)

// The cluster's feature level: shown with every live coild's, raised only once no live
// coild of a release before it is left, and from then on in events, state and diff.
func TestClusterVersion(t *testing.T) {
	e := newEnv(t)
	out := e.ok("cluster", "version")
	wantContains(t, "cluster version", out, "Cluster feature level:  0", "This coilctl supports:  1", "possible to 1", "No live coild.")
	e.ok("pool", "create", "default", "10.0.0.0/24", noSkipNB, "--layout", "pool-stream")
	// An old coild records only its node name in its liveness key.
	old := allocatortest.Start(t, e.cli, e.log, "n-old", allocatortest.Options{Clock: fixedClock{t0}, AliveValue: "n-old"})
	t.Cleanup(old.Kill)
	e.startNode("n-new")

	var v struct {
		Cluster, Supported events.Level
		Nodes              []struct {
			Node   string
			Level  events.Level
			Legacy bool
		}
		Behind []string
		Next   struct {
			Level    events.Level
			Types    []string
			Possible bool
		}
	}
	js := e.ok("cluster", "version", "-o", "json")
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatal(err)
	}
	if v.Cluster != 0 || v.Supported != events.CurrentLevel || len(v.Nodes) != 2 || v.Nodes[0].Node != "n-new" || v.Nodes[0].Level != 1 ||
		v.Nodes[1].Node != "n-old" || !v.Nodes[1].Legacy || len(v.Behind) != 1 || v.Behind[0] != "n-old" ||
		v.Next.Level != 1 || v.Next.Possible || !strings.Contains(strings.Join(v.Next.Types, " "), "ClusterLevelRaised") {
		t.Fatalf("cluster version -o json:\n%s", js)
	}
	out = e.ok("cluster", "version")
	if !strings.Contains(out, "not before every coild reads level 1; behind: 1") || !strings.Contains(out, "(a release before feature levels)") {
		t.Fatalf("cluster version:\n%s", out)
	}

	// Refusals: an old coild is live; bad --to; stray arguments.
	e.fails(4, []string{"cluster", "version", "raise"}, "cannot raise the cluster from feature level 0 to 1", "n-old (level 0: a release before feature levels)", "Upgrading")
	e.fails(2, []string{"cluster", "version", "raise", "--to", "2"}, "supports feature levels up to 1")
	e.fails(2, []string{"cluster", "version", "raise", "--to", "0"}, "levels start at 1")
	e.fails(2, []string{"cluster", "version", "sideways"}, "no arguments, or the subcommand raise")
	e.fails(2, []string{"cluster"}, "needs a subcommand")
	if evs := e.ok("events", "--stream", "cluster"); strings.Contains(evs, "ClusterLevelRaised") {
		t.Fatalf("a refused raise wrote:\n%s", evs)
	}
	revBefore := e.rev()
	before := e.ok("state", "--revision", revBefore, "-o", "json")

	// The old coild is replaced (its lease ends): the raise goes through, once.
	old.Kill()
	if out := e.ok("cluster", "version", "raise"); out != "cluster feature level raised from 0 to 1\n" {
		t.Fatalf("raise said %q", out)
	}
	if out := e.ok("cluster", "version", "raise"); out != "cluster feature level is already 1\n" {
		t.Fatalf("second raise said %q", out)
	}
	if out := e.ok("cluster", "version"); !strings.Contains(out, "Cluster feature level:  1") || !strings.Contains(out, "nothing to raise") {
		t.Fatalf("cluster version after the raise:\n%s", out)
	}
	evs := e.ok("events", "--stream", "cluster")
	if !strings.Contains(evs, "ClusterLevelRaised") || !strings.Contains(evs, "cluster feature level raised to 1") {
		t.Fatalf("events:\n%s", evs)
	}
	if !strings.Contains(e.ok("events", "--type", "ClusterLevelRaised"), "raised to 1") {
		t.Fatal("events --type ClusterLevelRaised shows nothing")
	}
	revAfter := e.rev()
	if strings.Contains(before, "featureLevel") {
		t.Fatalf("state before the raise has a level:\n%s", before)
	}
	if st := e.ok("state", "--revision", revAfter); !strings.Contains(st, "Cluster feature level 1") {
		t.Fatalf("state after the raise:\n%s", st)
	}
	if st := e.ok("state", "--revision", revAfter, "-o", "json"); !strings.Contains(st, `"featureLevel": 1`) {
		t.Fatalf("state -o json after the raise:\n%s", st)
	}
	if d := e.ok("diff", revBefore, revAfter); !strings.Contains(d, "~ level") || !strings.Contains(d, "0 -> 1") {
		t.Fatalf("diff:\n%s", d)
	}
	if d := e.ok("diff", revBefore, revAfter, "-o", "json"); !strings.Contains(d, `"featureLevel": {`) {
		t.Fatalf("diff -o json:\n%s", d)
	}
}

// rev is etcd's current revision, as coilctl's revision arguments take it.
func (e *env) rev() string {
	e.t.Helper()
	resp, err := e.cli.Get(context.Background(), "/rev")
	if err != nil {
		e.t.Fatal(err)
	}
	return strconv.FormatInt(resp.Header.Revision, 10)
}
