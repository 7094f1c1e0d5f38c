package netplumb_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/netplumb"
)

// env is a throwaway node namespace with a Plumber on it and one pod namespace.
type env struct {
	node, nodePath string
	pod, podPath   string
	p              *netplumb.Plumber
}

func newEnv(t testing.TB) *env {
	t.Helper()
	testutil.RequireRoot(t)
	e := &env{}
	e.node, e.nodePath = testutil.NetNS(t, "node")
	e.pod, e.podPath = testutil.NetNS(t, "pod")
	p, err := netplumb.New(netplumb.Config{HostNetNS: e.nodePath})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	e.p = p
	return e
}

// deletableNetNS makes a namespace the test may delete itself; it is removed at the end
// if it still exists.
func deletableNetNS(t testing.TB) (name, path string) {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name = "coiltest-gone-" + hex.EncodeToString(b[:])
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if _, err := os.Stat("/var/run/netns/" + name); err == nil {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		}
	})
	return name, "/var/run/netns/" + name
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ipIn runs `ip -n NS ARGS...` and returns its output.
func ipIn(t testing.TB, ns string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"-n", ns}, args...)...)
}

// ipJSON runs `ip -j -n NS ARGS...` and decodes the list.
func ipJSON(t testing.TB, ns string, args ...string) []map[string]any {
	t.Helper()
	out := ipIn(t, ns, append([]string{"-j"}, args...)...)
	var v []map[string]any
	if strings.TrimSpace(out) == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("decode ip -j %v: %v: %s", args, err, out)
	}
	return v
}

func linkExists(t testing.TB, ns, name string) bool {
	t.Helper()
	return exec.Command("ip", "-n", ns, "link", "show", "dev", name).Run() == nil
}

// podAddrs returns the global addresses of dev in ns as prefixes.
func globalAddrs(t testing.TB, ns, dev string) []string {
	t.Helper()
	var out []string
	for _, l := range ipJSON(t, ns, "addr", "show", "dev", dev) {
		infos, _ := l["addr_info"].([]any)
		for _, i := range infos {
			m := i.(map[string]any)
			if m["scope"] == "global" {
				out = append(out, fmt.Sprintf("%s/%v", m["local"], m["prefixlen"]))
			}
		}
	}
	return out
}

func mustPod(id, ifName, nsPath string, addrs ...string) netplumb.Pod {
	p := netplumb.Pod{ContainerID: id, IfName: ifName, NetNS: nsPath}
	for _, a := range addrs {
		p.Addrs = append(p.Addrs, netip.MustParseAddr(a))
	}
	return p
}

func setup(t testing.TB, e *env, pod netplumb.Pod) netplumb.Attachment {
	t.Helper()
	att, err := e.p.Setup(context.Background(), pod)
	if err != nil {
		t.Fatalf("Setup %s/%s: %v", pod.ContainerID, pod.IfName, err)
	}
	return att
}
