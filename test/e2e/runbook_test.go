package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab/demo"
)

// runbookScript is the script docs/operations.md ("Moving pods to another pool")
// includes verbatim.
const runbookScript = "scripts/migrate-pool.sh"

// TestRunbookDocMatchesScript: the runbook in docs/operations.md shows the script that
// TestMigratePoolRunbook runs, unchanged.
func TestRunbookDocMatchesScript(t *testing.T) {
	root := testutil.Root(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, runbookScript))
	if err != nil {
		t.Fatal(err)
	}
	open := "<!-- runbook: " + runbookScript + " -->\n```sh\n"
	i := strings.Index(string(doc), open)
	j := strings.Index(string(doc), "```\n<!-- /runbook -->")
	if i < 0 || j < i {
		t.Fatalf("docs/operations.md has no runbook block (%q ... %q)", open, "```\n<!-- /runbook -->")
	}
	if got := string(doc)[i+len(open) : j]; got != string(script) {
		t.Fatalf("the runbook in docs/operations.md differs from %s: copy the file into the doc", runbookScript)
	}
}

// TestMigratePoolRunbook runs the runbook's script against a lab cluster (two nodes,
// coild, etcd, BIRD; pods through cnitool): pods of pool "old" (chosen by the network
// config) keep their addresses and their traffic while the pool is disabled and they are
// replaced one by one; the replacements get addresses of pool "default" (coild's
// --default-pool, configured after the network config) without any configuration
// change; the script's finish step deletes "old" once its last pod is gone.
func TestMigratePoolRunbook(t *testing.T) {
	c := startCluster(t, demo.Config{Nodes: 2, ReconcileInterval: time.Second}, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const oldSubnet = "10.200.0.0/24"
	if err := c.CreatePool(ctx, "old", oldSubnet, 4); err != nil {
		t.Fatalf("%+v", err)
	}
	inOld := func(a netip.Addr) bool { return netip.MustParsePrefix(oldSubnet).Contains(a) }
	inNew := func(a netip.Addr) bool { return netip.MustParsePrefix(poolSubnet).Contains(a) }
	var pods []*demo.Pod
	for i, n := range c.Nodes {
		for j := range 2 {
			p, err := n.AddPodInPool(ctx, fmt.Sprintf("web-%d-%d", i, j), "old")
			if err != nil {
				t.Fatalf("%+v", err)
			}
			if !inOld(p.Addr) {
				t.Fatalf("pod %s got %s, not in pool old", p.Name, p.Addr)
			}
			pods = append(pods, p)
		}
		waitExported(t, n, 1)
	}
	waitConverged(t, c)

	script := filepath.Join(testutil.Root(t), runbookScript)
	runScript := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "sh", append([]string{script}, args...)...)
		cmd.Env = append(os.Environ(), "COILCTL="+filepath.Join(binDir, "coilctl")+" --etcd-endpoints "+c.EtcdURL, "POLL=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", runbookScript, strings.Join(args, " "), err, out)
		}
		t.Logf("%s %s:\n%s", runbookScript, strings.Join(args, " "), out)
		return string(out)
	}
	out := runScript("start", "old", "default")
	for _, want := range []string{`pool "old" disabled: `, "State:             disabled (moving to pool default)", "Remaining:         4 addresses on "} {
		if !strings.Contains(out, want) {
			t.Errorf("start's output lacks %q", want)
		}
	}

	// Replace the pods one by one: the new one (same configuration: pool "old") gets an
	// address of "default"; it and the old pods reach each other across nodes before the
	// old one goes.
	for _, old := range pods {
		n := old.Node
		p, err := n.AddPodInPool(ctx, old.Name+"-v2", "old")
		if err != nil {
			t.Fatalf("replacement of %s: %+v", old.Name, err)
		}
		if !inNew(p.Addr) {
			t.Fatalf("replacement %s got %s, not in pool default", p.Name, p.Addr)
		}
		waitConverged(t, c)
		for _, other := range c.Nodes {
			for _, q := range other.Pods() {
				if q.Node != n {
					ping(t, p, q.Addr)
					ping(t, q, p.Addr)
				}
			}
		}
		if err := n.DelPod(ctx, old.Name); err != nil {
			t.Fatalf("%+v", err)
		}
	}
	if out := runScript("finish", "old", "60"); !strings.Contains(out, `pool "old" deleted`) {
		t.Fatalf("finish did not delete pool old:\n%s", out)
	}
	list, err := c.Coilctl(ctx, "pool", "list")
	if err != nil || strings.Contains(string(list), "old") {
		t.Fatalf("pool list after the runbook: %v\n%s", err, list)
	}
}
