package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"

	"github.com/coil-net/coil/internal/testutil"
)

// startCoild starts coild in the node namespace (with --crash-at when crashAt is set)
// without waiting for it. The process is stopped at the end of the test if it still
// runs; its log is shown when the test failed.
func (e *env) startCoild(crashAt string) *testutil.Proc {
	e.t.Helper()
	args := e.coildArgs(e.sock, e.stateDir)
	if crashAt != "" {
		args = append(args, "--crash-at", crashAt)
	}
	return e.startIn(e.nodeNS, fmt.Sprintf("coild (crash-at %q)", crashAt), append([]string{coildBin(e.t)}, args...)...)
}

// startIn runs argv in network namespace ns (ip netns exec) as a testutil.Proc: stopped
// (SIGTERM, by PID) at the end of the test if it still runs, its output logged under
// label when the test failed.
func (e *env) startIn(ns, label string, argv ...string) *testutil.Proc {
	e.t.Helper()
	return testutil.StartProc(e.t, label, exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...))
}

// waitKilled waits for the process to die of SIGKILL (a crash point).
func waitKilled(t *testing.T, p *testutil.Proc) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("coild did not crash within 30s")
	}
	if p.KilledBy() != syscall.SIGKILL {
		t.Fatalf("coild exited with %v, want killed by SIGKILL", p.Err())
	}
}

// divergence describes how the node's kernel state differs from the log ("" when it
// agrees): the veths are exactly those of the held attachments, each with the /32 and
// /128 of its addresses and no other pod route, table 119 holds exactly the node's
// blocks, and no DEL intent is pending.
func (e *env) divergence() string {
	t := e.t
	var diffs []string
	held := e.held()
	var wantVeths, wantRoutes []string
	for k, addrs := range held {
		v := hostVeth(k.ContainerID)
		wantVeths = append(wantVeths, v)
		for _, a := range addrs {
			wantRoutes = append(wantRoutes, a.String()+" dev "+v)
		}
	}
	sort.Strings(wantVeths)
	sort.Strings(wantRoutes)
	if got := veths(t, e.nodeNS); join(got) != join(wantVeths) {
		diffs = append(diffs, fmt.Sprintf("veths %v, attachments want %v", got, wantVeths))
	}
	if got := coilHostRoutes(t, e.nodeNS); join(got) != join(wantRoutes) {
		diffs = append(diffs, fmt.Sprintf("pod routes %v, want %v", got, wantRoutes))
	}
	if got, want := table(t, e.nodeNS, 119), blockRoutes(pool4, pool6, bits, e.nodeBlocks("default")); join(got) != join(want) {
		diffs = append(diffs, fmt.Sprintf("table 119 %v, want %v", got, want))
	}
	if ents, err := os.ReadDir(filepath.Join(e.stateDir, "del")); err != nil || len(ents) != 0 {
		diffs = append(diffs, fmt.Sprintf("DEL intents pending: %v %v", ents, err))
	}
	return strings.Join(diffs, "; ")
}

func (e *env) waitConverged() {
	e.t.Helper()
	var last string
	testutil.Eventually(e.t, 30*time.Second, func() bool {
		last = e.divergence()
		return last == ""
	}, "kernel converges to the log: %s", &last)
}

func TestCrashConsistency(t *testing.T) {
	for _, point := range []string{"add-after-alloc", "add-after-prepare", "add-after-setup", "del-after-intent", "del-after-teardown"} {
		t.Run(point, func(t *testing.T) {
			e := newEnv(t)
			e.defaultPool()
			ctx := context.Background()
			c, list := e.cni(), e.netList()
			const victim, bystander = "dead0001", "live0002"
			victimNS, victimPath := e.pod("victim")
			_, bystanderPath := e.pod("bystander")
			var bystanderAddrs []netip.Addr

			isAdd := strings.HasPrefix(point, "add-")
			var p *testutil.Proc
			if isAdd {
				p = e.startCoild(point)
			} else {
				// Two pods up, then coild restarted with the crash point.
				first := e.startCoild("")
				e.waitReady()
				if _, err := c.AddNetworkList(ctx, list, podRT(victim, victimPath)); err != nil {
					t.Fatalf("ADD %s: %v", victim, err)
				}
				first.Stop(t)
				p = e.startCoild(point)
			}
			e.waitReady()
			if !isAdd {
				res, err := c.AddNetworkList(ctx, list, podRT(bystander, bystanderPath))
				if err != nil {
					t.Fatalf("ADD %s: %v", bystander, err)
				}
				bystanderAddrs = addrsOf(t, res)
			}

			// Trigger the crash.
			if isAdd {
				_, err := c.AddNetworkList(ctx, list, podRT(victim, victimPath))
				if code, msg := cniCode(t, err); code != types.ErrTryAgainLater {
					t.Errorf("ADD answered by a crashing coild: %d %s, want 11", code, msg)
				}
			} else {
				err := c.DelNetworkList(ctx, list, podRT(victim, victimPath))
				if point == "del-after-intent" {
					if code, msg := cniCode(t, err); code != types.ErrTryAgainLater {
						t.Errorf("DEL answered by a crashing coild: %d %s, want 11", code, msg)
					}
				} else if err != nil {
					t.Errorf("DEL (answered before the crash): %v", err)
				}
			}
			waitKilled(t, p)

			e.startCoild("")
			e.waitReady()
			if isAdd {
				// A bystander ADDed after the restart must not be disturbed by the recovery.
				res, err := c.AddNetworkList(ctx, list, podRT(bystander, bystanderPath))
				if err != nil {
					t.Fatalf("ADD %s after restart: %v", bystander, err)
				}
				bystanderAddrs = addrsOf(t, res)
			}
			e.waitConverged()

			held := e.held()
			if got := held[attachKey{bystander, "eth0"}]; !slices.Equal(got, bystanderAddrs) {
				t.Errorf("bystander holds %v, want %v", got, bystanderAddrs)
			}
			if err := ping(t, e.nodeNS, bystanderAddrs[0]); err != nil {
				t.Errorf("bystander after recovery: %v", err)
			}
			switch point {
			case "add-after-alloc", "add-after-prepare":
				// add-after-prepare leaves the veth pending (no address, no route): the
				// reconciler deletes it, then releases the address.
				e.expectNoLeak(victim)
				rel := e.released(victim)
				if len(rel) != 1 || !strings.Contains(rel[0].Reason, "veth") || !strings.Contains(rel[0].Reason, "missing") {
					t.Errorf("victim released with %+v, want one release saying its veth is missing", rel)
				}
				if point == "add-after-prepare" && len(rel) == 1 && !strings.Contains(rel[0].Reason, "addresses and routes") {
					t.Errorf("victim released with %q, want the reason to name the unplumbed veth", rel[0].Reason)
				}
				// The runtime's retry of the ADD works.
				if _, err := c.AddNetworkList(ctx, list, podRT(victim, victimPath)); err != nil {
					t.Fatalf("ADD retried after recovery: %v", err)
				}
			case "add-after-setup":
				// The pod is plumbed and its address committed: it stays.
				addrs, ok := held[attachKey{victim, "eth0"}]
				if !ok {
					t.Fatalf("victim's address was released; the pod was fully set up")
				}
				if got, want := join(podAddrs(t, victimNS)), join([]string{addrs[0].String() + "/32", addrs[1].String() + "/128"}); got != want {
					t.Errorf("victim pod addresses %q, want %q", got, want)
				}
				if err := ping(t, e.nodeNS, addrs[0]); err != nil {
					t.Errorf("victim after recovery: %v", err)
				}
			default:
				e.expectNoLeak(victim)
				rel := e.released(victim)
				if len(rel) != 1 || rel[0].Reason != "CNI DEL" {
					t.Errorf("victim released with %+v, want one release for CNI DEL", rel)
				}
			}
			// A DEL of everything leaves the node clean.
			for _, id := range []string{victim, bystander} {
				if err := c.DelNetworkList(ctx, list, podRT(id, "")); err != nil {
					t.Fatalf("DEL %s: %v", id, err)
				}
			}
			e.waitConverged()
			e.expectClean("after DEL of all pods")
		})
	}
}

// TestRestartKeepsPods: a graceful restart of coild leaves a running pod alone.
func TestRestartKeepsPods(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	podNS, podPath := e.pod("pod")
	const id = "beef0001"

	p := e.startCoild("")
	e.waitReady()
	res, err := c.AddNetworkList(ctx, list, podRT(id, podPath))
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	addrs := addrsOf(t, res)
	if err := ping(t, e.nodeNS, addrs[0]); err != nil {
		t.Fatalf("before restart: %v", err)
	}
	link := linkIndex(t, e.nodeNS, hostVeth(id))
	p.Stop(t)
	// coild is down: the pod's network does not need it.
	if err := ping(t, e.nodeNS, addrs[0]); err != nil {
		t.Errorf("while coild is stopped: %v", err)
	}
	e.startCoild("")
	e.waitReady()
	e.waitConverged()
	if got := e.held()[attachKey{id, "eth0"}]; !slices.Equal(got, addrs) {
		t.Errorf("after restart the pod holds %v, want %v", got, addrs)
	}
	if got := linkIndex(t, e.nodeNS, hostVeth(id)); got != link {
		t.Errorf("veth was re-created (index %d, was %d)", got, link)
	}
	if got, want := join(podAddrs(t, podNS)), join([]string{addrs[0].String() + "/32", addrs[1].String() + "/128"}); got != want {
		t.Errorf("pod addresses after restart %q, want %q", got, want)
	}
	if err := ping(t, e.nodeNS, addrs[0]); err != nil {
		t.Errorf("after restart: %v", err)
	}
	if err := c.CheckNetworkList(ctx, list, podRT(id, podPath)); err != nil {
		t.Errorf("CHECK after restart: %v", err)
	}
	if rel := e.released(id); len(rel) != 0 {
		t.Errorf("restart released the pod's address: %+v", rel)
	}
}

// ipLink is what the tests read of `ip -j link show dev DEV`.
type ipLink struct {
	IfIndex int `json:"ifindex"`
	MTU     int `json:"mtu"`
}

// showLink reads link dev in namespace ns.
func showLink(t *testing.T, ns, dev string) ipLink {
	t.Helper()
	var links []ipLink
	ipJSON(t, &links, "-n", ns, "-j", "link", "show", "dev", dev)
	if len(links) != 1 {
		t.Fatalf("ip -n %s link show dev %s: %v", ns, dev, links)
	}
	return links[0]
}

func linkIndex(t *testing.T, ns, name string) int {
	t.Helper()
	return showLink(t, ns, name).IfIndex
}

// TestDelBeforeReady: a DEL answered while coild is still waiting for its lease (before
// it has read the log) is finished once it has, and recorded as the DEL it was.
func TestDelBeforeReady(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	_, podPath := e.pod("pod")
	const id = "e0e00001"
	first := e.startDaemon(e.config())
	if _, err := c.AddNetworkList(ctx, list, podRT(id, podPath)); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	first.Stop(t)

	// A state dir without the last lease (as after /run was wiped): the new coild waits
	// for the old lease to expire before it reads the log, with its socket already open.
	cfg := e.config()
	cfg.StateDir = filepath.Join(t.TempDir(), "fresh-state")
	e.stateDir = cfg.StateDir
	e.startDaemonNoWait(cfg)
	client := cniproto.NewClient(e.sock, 5*time.Second)
	var statusErr error
	waitFor(t, func() bool {
		statusErr = client.Status(ctx)
		return statusErr != nil && strings.Contains(statusErr.Error(), "try again")
	}, "coild up but not ready")
	// An ADD meanwhile is told to try again later (code 11), not "plugin not available"
	// (50), which the CNI spec gives to STATUS.
	var ce *cniproto.Error
	if _, err := client.Add(ctx, &cniproto.Request{ContainerID: "e0e00002", IfName: "eth0", NetNS: podPath}); !errors.As(err, &ce) || ce.Code != cniproto.CodeTryAgainLater {
		t.Errorf("ADD while not ready: %v, want CNI code 11", err)
	}
	if err := client.Del(ctx, &cniproto.Request{ContainerID: id, IfName: "eth0"}); err != nil {
		t.Fatalf("DEL while not ready: %v", err)
	}
	e.waitReady()
	e.waitConverged()
	e.expectNoLeak(id)
	if rel := e.released(id); len(rel) != 1 || rel[0].Reason != "CNI DEL" {
		t.Errorf("released %d times (first reason %q), want once for CNI DEL", len(rel), reasonOf(rel))
	}
}

func reasonOf(rel []*events.AddressReleased) string {
	if len(rel) == 0 {
		return ""
	}
	return rel[0].Reason
}

// TestFlagsDocumented: docs/coild.md lists exactly the flags `coild --help` shows.
func TestFlagsDocumented(t *testing.T) {
	out, err := exec.Command(coildBin(t), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("coild --help: %v\n%s", err, out)
	}
	var help []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "--") && f[0] != "--help" {
			help = append(help, f[0])
		} else if len(f) > 1 && strings.HasPrefix(f[0], "-") && strings.HasPrefix(f[1], "--") && f[1] != "--help" {
			help = append(help, f[1]) // "-x, --long"
		}
	}
	root := testutil.Root(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "coild.md"))
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, line := range strings.Split(string(doc), "\n") {
		if rest, ok := strings.CutPrefix(line, "| `--"); ok {
			documented = append(documented, "--"+rest[:strings.Index(rest, "`")])
		}
	}
	sort.Strings(help)
	sort.Strings(documented)
	if join(help) != join(documented) || len(help) < 10 {
		t.Errorf("coild --help shows %v\ndocs/coild.md documents %v", help, documented)
	}
	if strings.Contains(string(out), "crash-at") {
		t.Errorf("--crash-at must stay hidden")
	}
}
