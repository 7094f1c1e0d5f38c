package daemon_test

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/ipamcheck"
)

// TestIPAMCheckKernel (issue 14, item 7): coild reports its kernel state against its
// projection at GET /ipam on its metrics port, and `coilctl ipam check` reads it: a
// converged node is clean (exit 0); a pod route to an address the log does not hold and a
// block missing from the export table are findings (exit 6).
func TestIPAMCheckKernel(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	cfg := e.config()
	cfg.ReconcileEvery = time.Hour // nothing repairs the kernel behind the test's back
	cfg.MetricsAddr = freeLoopbackAddr(t)
	e.startDaemon(cfg)
	e.addPods(e.cni(), e.netList(), "pod00001", "pod00002")
	url := "http://" + cfg.MetricsAddr
	e.waitConverged()

	resp, err := http.Get(url + "/ipam") //nolint:noctx // a test against a loopback server
	if err != nil {
		t.Fatal(err)
	}
	var nr ipamcheck.NodeReport
	err = json.NewDecoder(resp.Body).Decode(&nr)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ipam: %s, %v", resp.Status, err)
	}
	if nr.Node != nodeName || len(nr.Attachments) != 2 || len(nr.Veths) != 2 || len(nr.Routes) != 4 || len(nr.Blocks) != 2 || len(nr.ExportRoutes) != 2 || len(nr.Findings) != 0 || nr.ExportTable != 119 {
		t.Fatalf("report %+v", nr)
	}

	out, stderr, code := e.coilctl("ipam", "check", "--coild", nodeName+"="+url)
	if code != 0 || !strings.Contains(out, "clean: 2 attachments, pods not compared, kernels of 1 nodes (n1) compared") {
		t.Fatalf("clean node: exit %d, stderr %q, stdout:\n%s", code, stderr, out)
	}

	// A pod route nobody holds (through pod00001's veth), and a block route gone from
	// table 119.
	veth := hostVeth("pod00001")
	ip := func(args ...string) {
		t.Helper()
		if b, err := exec.Command("ip", append([]string{"-n", e.nodeNS}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, b)
		}
	}
	ip("route", "add", "10.100.0.250/32", "dev", veth, "proto", "30", "scope", "link")
	ip("route", "del", "blackhole", nr.Blocks[0].String(), "table", "119", "proto", "30")

	out, stderr, code = e.coilctl("ipam", "check", "--coild", nodeName+"="+url)
	t.Logf("report:\n%s", out)
	if code != cli.ExitFindings || stderr != "coilctl: ipam check: 2 findings\n" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, w := range []string{
		"export_missing            n1    " + nr.Blocks[0].String(),
		"route_without_assignment  n1    10.100.0.250/32  " + veth,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("report lacks %q", w)
		}
	}
}
