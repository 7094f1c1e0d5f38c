package netplumb_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/netplumb"
)

// nodeUplink gives the node namespace an interface and a default route of its own (a
// veth pair inside it, 198.51.100.2/24, default via 198.51.100.1), as a real node has, and
// returns a snapshot function of its links and routes.
func nodeUplink(t *testing.T, e *env) func() string {
	t.Helper()
	ipIn(t, e.node, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
	// No IPv6 link-local addresses: their duplicate address detection would change the
	// snapshot on its own.
	ipIn(t, e.node, "link", "set", "up0", "addrgenmode", "none")
	ipIn(t, e.node, "link", "set", "up1", "addrgenmode", "none")
	ipIn(t, e.node, "addr", "add", "198.51.100.2/24", "dev", "up0")
	ipIn(t, e.node, "link", "set", "up0", "up")
	ipIn(t, e.node, "link", "set", "up1", "up")
	ipIn(t, e.node, "route", "add", "default", "via", "198.51.100.1", "dev", "up0")
	return func() string {
		var b strings.Builder
		for _, l := range ipJSON(t, e.node, "link", "show") {
			fmt.Fprintf(&b, "link %v\n", l["ifname"])
		}
		b.WriteString(ipIn(t, e.node, "-4", "-o", "addr", "show"))
		for _, fam := range []string{"-4", "-6"} {
			for _, line := range strings.Split(ipIn(t, e.node, fam, "route", "show", "table", "all"), "\n") {
				if !strings.Contains(line, "table local") {
					b.WriteString(strings.ReplaceAll(line, " linkdown", "") + "\n")
				}
			}
		}
		return b.String()
	}
}

// TestNodeNetNSRefused: a "pod" namespace that is the node's own (the host namespace
// under any path, the process's own, PID 1's) is refused before anything is created, so
// the node's default route is never replaced (issue 10).
func TestNodeNetNSRefused(t *testing.T) {
	e := newEnv(t)
	snapshot := nodeUplink(t, e)
	before := snapshot()
	ctx := context.Background()

	// The node namespace under another path: a process running in it.
	sleeper := exec.Command("ip", "netns", "exec", e.node, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	alias := "/proc/" + strconv.Itoa(sleeper.Process.Pid) + "/ns/net"

	for _, path := range []string{e.nodePath, alias} {
		pod := mustPod("c-node", "eth9", path, "10.1.0.9")
		if _, err := e.p.Prepare(ctx, pod); !errors.Is(err, netplumb.ErrNodeNetNS) {
			t.Errorf("Prepare into %s: %v, want ErrNodeNetNS", path, err)
		}
		if _, err := e.p.Setup(ctx, pod); !errors.Is(err, netplumb.ErrNodeNetNS) {
			t.Errorf("Setup into %s: %v, want ErrNodeNetNS", path, err)
		}
		if err := e.p.Check(ctx, pod); !errors.Is(err, netplumb.ErrNodeNetNS) {
			t.Errorf("Check in %s: %v, want ErrNodeNetNS", path, err)
		}
	}
	// Never plumbed here (that would be the machine's namespace): only checked.
	paths := []string{e.nodePath, alias, "/proc/self/ns/net"}
	if _, err := os.Stat("/proc/1/ns/net"); err == nil {
		paths = append(paths, "/proc/1/ns/net")
	} else {
		// Some sandboxes hide PID 1 even from root; the Plumber then cannot know it either.
		t.Logf("PID 1's namespace not checked: %v", err)
	}
	for _, path := range paths {
		if err := e.p.CheckPodNetNS(path); !errors.Is(err, netplumb.ErrNodeNetNS) {
			t.Errorf("CheckPodNetNS(%s) = %v, want ErrNodeNetNS", path, err)
		}
	}
	if err := e.p.CheckPodNetNS(e.podPath); err != nil {
		t.Errorf("CheckPodNetNS of a pod namespace: %v", err)
	}
	if err := e.p.CheckPodNetNS("/var/run/netns/coiltest-no-such-ns"); !errors.Is(err, netplumb.ErrNetNSNotFound) {
		t.Errorf("CheckPodNetNS of a missing path: %v, want ErrNetNSNotFound", err)
	}
	if after := snapshot(); after != before {
		t.Errorf("the node namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// A real pod still works, and removing it leaves the node's routes as they were.
	setup(t, e, mustPod("c-pod", "eth0", e.podPath, "10.1.0.5"))
	if err := e.p.TeardownMany(ctx, []string{netplumb.HostVethName("c-pod", "eth0")}); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(); after != before {
		t.Errorf("the node namespace changed after a pod came and went:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestTeardownOnlyCoilVeths: a veth with a Coil name that Coil did not make (not in its
// link groups) is never deleted, by Teardown or TeardownMany.
func TestTeardownOnlyCoilVeths(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	name := netplumb.HostVethName("c-foreign", "eth0")
	ipIn(t, e.node, "link", "add", name, "type", "veth", "peer", "name", "x0")
	if err := e.p.Teardown(ctx, "c-foreign", "eth0"); !errors.Is(err, netplumb.ErrInvalidArgument) {
		t.Errorf("Teardown of a foreign veth = %v, want ErrInvalidArgument", err)
	}
	if err := e.p.TeardownMany(ctx, []string{name}); !errors.Is(err, netplumb.ErrInvalidArgument) {
		t.Errorf("TeardownMany of a foreign veth = %v, want ErrInvalidArgument", err)
	}
	if !linkExists(t, e.node, name) {
		t.Errorf("a veth Coil did not make was deleted")
	}
}
