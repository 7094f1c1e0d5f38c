package netplumb_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/netplumb"
)

func TestSetupDualStack(t *testing.T) {
	e := newEnv(t)
	testutil.RequireCommand(t, "ping")
	pod := mustPod("c-dual", "eth0", e.podPath, "10.1.0.5", "fd00::5")
	att := setup(t, e, pod)

	name := netplumb.HostVethName("c-dual", "eth0")
	if att.HostVeth != name || att.IfName != "eth0" || len(att.PodMAC) != 6 || len(att.HostMAC) != 6 {
		t.Fatalf("attachment = %+v", att)
	}
	if got := globalAddrs(t, e.pod, "eth0"); !slices.Equal(got, []string{"10.1.0.5/32", "fd00::5/128"}) {
		t.Fatalf("pod addresses = %v", got)
	}
	if r := ipIn(t, e.pod, "-4", "route", "show", "default"); !strings.Contains(r, "default via 169.254.1.1 dev eth0") {
		t.Fatalf("pod IPv4 default route missing: %q", r)
	}
	if r := ipIn(t, e.pod, "-4", "route", "show", "169.254.1.1"); !strings.Contains(r, "dev eth0 scope link") {
		t.Fatalf("pod gateway route missing: %q", r)
	}
	if r := ipIn(t, e.pod, "-6", "route", "show", "default"); !strings.Contains(r, "default via fe80::1 dev eth0") {
		t.Fatalf("pod IPv6 default route missing: %q", r)
	}
	if r := ipIn(t, e.node, "-4", "route", "show", "table", "main", "proto", "30"); strings.TrimSpace(r) != "10.1.0.5 dev "+name+" scope link" {
		t.Fatalf("node IPv4 routes = %q", r)
	}
	if r := ipIn(t, e.node, "-6", "route", "show", "table", "main", "proto", "30"); !strings.HasPrefix(strings.TrimSpace(r), "fd00::5 dev "+name) {
		t.Fatalf("node IPv6 routes = %q", r)
	}
	if got := ipJSON(t, e.node, "link", "show", "dev", name); len(got) != 1 || got[0]["group"] != "49169" {
		t.Fatalf("host veth link group = %v", got)
	}
	if v := run(t, "ip", "netns", "exec", e.node, "sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"); strings.Fields(v)[0] != "1" || strings.Fields(v)[1] != "1" {
		t.Fatalf("forwarding sysctls in node = %q", v)
	}
	// Traffic: from the node namespace to the pod, both families (NO-CARRIER may linger
	// briefly after creation, so allow retries).
	for _, args := range [][]string{{"-4", "10.1.0.5"}, {"-6", "fd00::5"}} {
		testutil.Eventually(t, 10*time.Second, func() bool {
			cmd := exec.Command("ip", "netns", "exec", e.node, "ping", args[0], "-c1", "-W2", args[1])
			return cmd.Run() == nil
		}, "ping %s from node namespace", args[1])
	}
	if err := e.p.Check(context.Background(), pod); err != nil {
		t.Fatalf("Check after Setup: %v", err)
	}
}

func TestSetupSingleFamily(t *testing.T) {
	e := newEnv(t)
	setup(t, e, mustPod("c-v4", "eth0", e.podPath, "10.1.0.6"))
	setup(t, e, mustPod("c-v6", "eth1", e.podPath, "fd00::6"))
	if got := globalAddrs(t, e.pod, "eth0"); !slices.Equal(got, []string{"10.1.0.6/32"}) {
		t.Fatalf("eth0 addresses = %v", got)
	}
	if got := globalAddrs(t, e.pod, "eth1"); !slices.Equal(got, []string{"fd00::6/128"}) {
		t.Fatalf("eth1 addresses = %v", got)
	}
	if r := ipIn(t, e.pod, "-6", "route", "show", "default", "dev", "eth0"); strings.TrimSpace(r) != "" {
		t.Fatalf("IPv4-only interface has an IPv6 default route: %q", r)
	}
}

// snapshot is the state Setup is responsible for in both namespaces, without what the
// kernel adds asynchronously (IPv6 link-local addresses and kernel routes).
func snapshot(t *testing.T, e *env) string {
	t.Helper()
	var b strings.Builder
	for _, ns := range []string{e.node, e.pod} {
		b.WriteString(ipIn(t, ns, "-o", "-4", "addr"))
		b.WriteString(ipIn(t, ns, "-o", "-6", "addr", "show", "scope", "global"))
		b.WriteString(ipIn(t, ns, "-o", "-6", "addr", "show", "to", "fe80::1/128"))
		b.WriteString(ipIn(t, ns, "-4", "route", "show", "table", "all"))
		for _, l := range strings.Split(ipIn(t, ns, "-6", "route", "show", "table", "main"), "\n") {
			if !strings.Contains(l, "proto kernel") {
				b.WriteString(l + "\n")
			}
		}
		for _, l := range ipJSON(t, ns, "link") {
			b.WriteString(l["ifname"].(string) + " " + l["address"].(string) + "\n")
		}
	}
	return b.String()
}

func TestSetupIdempotent(t *testing.T) {
	e := newEnv(t)
	pod := mustPod("c-idem", "eth0", e.podPath, "10.1.0.7", "fd00::7")
	first := setup(t, e, pod)
	before := snapshot(t, e)
	second := setup(t, e, pod)
	if !reflect.DeepEqual(first, second) {
		t.Fatalf("second Setup returned %+v, first %+v", second, first)
	}
	if after := snapshot(t, e); after != before {
		t.Fatalf("second Setup changed the kernel state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if err := e.p.Check(context.Background(), pod); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestSetupConverges(t *testing.T) {
	e := newEnv(t)
	pod := mustPod("c-conv", "eth0", e.podPath, "10.1.0.8", "fd00::8")
	first := setup(t, e, pod)
	// Break parts of it, then Setup again repairs in place (same pair).
	ipIn(t, e.pod, "addr", "del", "10.1.0.8/32", "dev", "eth0")
	ipIn(t, e.pod, "-6", "route", "del", "default", "via", "fe80::1", "dev", "eth0")
	ipIn(t, e.node, "route", "del", "10.1.0.8/32", "dev", first.HostVeth)
	if err := e.p.Check(context.Background(), pod); !errors.Is(err, netplumb.ErrCheckFailed) {
		t.Fatalf("Check on a broken attachment = %v, want ErrCheckFailed", err)
	}
	second := setup(t, e, pod)
	if second.HostIndex != first.HostIndex || second.PodIndex != first.PodIndex {
		t.Fatalf("converging Setup recreated the pair: %+v vs %+v", second, first)
	}
	if err := e.p.Check(context.Background(), pod); err != nil {
		t.Fatalf("Check after converging Setup: %v", err)
	}
	// New addresses for the same pod replace the old ones.
	pod.Addrs = mustPod("", "", "", "10.1.0.9").Addrs
	setup(t, e, pod)
	if got := globalAddrs(t, e.pod, "eth0"); !slices.Equal(got, []string{"10.1.0.9/32"}) {
		t.Fatalf("pod addresses after readdressing = %v", got)
	}
	if r := ipIn(t, e.node, "route", "show", "proto", "30"); strings.TrimSpace(r) != "10.1.0.9 dev "+first.HostVeth+" scope link" {
		t.Fatalf("node routes after readdressing = %q", r)
	}
	if r := ipIn(t, e.node, "-6", "route", "show", "proto", "30"); strings.TrimSpace(r) != "" {
		t.Fatalf("node IPv6 routes after readdressing = %q", r)
	}
}

func TestSetupReplacesStaleLink(t *testing.T) {
	e := newEnv(t)
	name := netplumb.HostVethName("c-stale", "eth0")
	// A stale link of that name, e.g. left by a crash (its peer stays in the node).
	ipIn(t, e.node, "link", "add", name, "type", "veth", "peer", "name", "stalepeer")
	att := setup(t, e, mustPod("c-stale", "eth0", e.podPath, "10.1.0.10"))
	if linkExists(t, e.node, "stalepeer") {
		t.Fatal("stale pair still present")
	}
	if att.HostVeth != name || !linkExists(t, e.node, name) || !linkExists(t, e.pod, "eth0") {
		t.Fatal("new pair missing")
	}

	// The same container ID set up again in another pod namespace (the old pair is stale).
	_, other := testutil.NetNS(t, "pod2")
	pod2 := mustPod("c-stale", "eth0", other, "10.1.0.10")
	setup(t, e, pod2)
	if linkExists(t, e.pod, "eth0") {
		t.Fatal("old pod interface survived the re-setup in another namespace")
	}
	if err := e.p.Check(context.Background(), pod2); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestSetupErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.p.Setup(ctx, mustPod("c-err", "eth0", "/var/run/netns/coiltest-does-not-exist", "10.1.0.11"))
	if !errors.Is(err, netplumb.ErrNetNSNotFound) {
		t.Fatalf("Setup in a missing netns = %v, want ErrNetNSNotFound", err)
	}
	// A foreign eth0 in the pod namespace.
	ipIn(t, e.pod, "link", "add", "eth0", "type", "veth", "peer", "name", "foreign1")
	_, err = e.p.Setup(ctx, mustPod("c-err", "eth0", e.podPath, "10.1.0.11"))
	if !errors.Is(err, netplumb.ErrIfNameInUse) {
		t.Fatalf("Setup with a foreign eth0 = %v, want ErrIfNameInUse", err)
	}
	if linkExists(t, e.node, netplumb.HostVethName("c-err", "eth0")) {
		t.Fatal("failed Setup left a host veth behind")
	}
	_, err = e.p.Setup(ctx, mustPod("c-err", "eth0", e.podPath))
	if !errors.Is(err, netplumb.ErrInvalidArgument) {
		t.Fatalf("Setup without addresses = %v, want ErrInvalidArgument", err)
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pod := mustPod("c-check", "eth0", e.podPath, "10.1.0.12", "fd00::12")
	att := setup(t, e, pod)
	if err := e.p.Check(ctx, pod); err != nil {
		t.Fatalf("Check: %v", err)
	}
	ipIn(t, e.pod, "addr", "del", "fd00::12/128", "dev", "eth0")
	if err := e.p.Check(ctx, pod); !errors.Is(err, netplumb.ErrCheckFailed) || !strings.Contains(err.Error(), "missing pod address fd00::12") {
		t.Fatalf("Check without the pod's IPv6 address = %v", err)
	}
	setup(t, e, pod)
	ipIn(t, e.node, "-6", "route", "del", "fd00::12/128", "dev", att.HostVeth)
	if err := e.p.Check(ctx, pod); !errors.Is(err, netplumb.ErrCheckFailed) || !strings.Contains(err.Error(), "missing host route") {
		t.Fatalf("Check without the host route = %v", err)
	}
	if err := e.p.Teardown(ctx, "c-check", "eth0"); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if err := e.p.Check(ctx, pod); !errors.Is(err, netplumb.ErrLinkNotFound) {
		t.Fatalf("Check after Teardown = %v, want ErrLinkNotFound", err)
	}
}

func TestTeardown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	att := setup(t, e, mustPod("c-td", "eth0", e.podPath, "10.1.0.13", "fd00::13"))
	if err := e.p.Teardown(ctx, "c-td", "eth0"); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	// Gone when Teardown returns (no waiting).
	if linkExists(t, e.node, att.HostVeth) || linkExists(t, e.pod, "eth0") {
		t.Fatal("veth pair still present after Teardown")
	}
	for _, fam := range []string{"-4", "-6"} {
		if r := ipIn(t, e.node, fam, "route", "show", "table", "main", "proto", "30"); strings.TrimSpace(r) != "" {
			t.Fatalf("routes left after Teardown: %q", r)
		}
	}
	if err := e.p.Teardown(ctx, "c-td", "eth0"); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	// Never deletes something that is not a veth.
	name := netplumb.HostVethName("c-br", "eth0")
	ipIn(t, e.node, "link", "add", name, "type", "bridge")
	if err := e.p.Teardown(ctx, "c-br", "eth0"); !errors.Is(err, netplumb.ErrInvalidArgument) {
		t.Fatalf("Teardown of a bridge = %v, want ErrInvalidArgument", err)
	}
}

func TestTeardownAfterNetNSDeleted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	podName, podPath := deletableNetNS(t)
	att := setup(t, e, mustPod("c-gone", "eth0", podPath, "10.1.0.14"))
	run(t, "ip", "netns", "del", podName)
	if err := e.p.Teardown(ctx, "c-gone", "eth0"); err != nil {
		t.Fatalf("Teardown after netns deletion: %v", err)
	}
	if linkExists(t, e.node, att.HostVeth) {
		t.Fatal("host veth present after Teardown")
	}
	if err := e.p.Teardown(ctx, "c-gone", "eth0"); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
	if err := e.p.Check(ctx, mustPod("c-gone", "eth0", podPath, "10.1.0.14")); !errors.Is(err, netplumb.ErrNetNSNotFound) {
		t.Fatalf("Check in a deleted netns = %v, want ErrNetNSNotFound", err)
	}
}

func TestTeardownMany(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var names []string
	for i, a := range []string{"10.1.1.1", "10.1.1.2", "10.1.1.3", "10.1.1.4", "10.1.1.5"} {
		id := "c-many-" + string(rune('a'+i))
		att := setup(t, e, mustPod(id, "eth"+string(rune('0'+i)), e.podPath, a, "fd00::1:"+string(rune('1'+i))))
		names = append(names, att.HostVeth)
	}
	// A non-Coil veth is refused before anything is deleted.
	ipIn(t, e.node, "link", "add", "notcoil", "type", "veth", "peer", "name", "notcoilpeer")
	if err := e.p.TeardownMany(ctx, []string{names[0], "notcoil"}); !errors.Is(err, netplumb.ErrInvalidArgument) {
		t.Fatalf("TeardownMany with a foreign link = %v, want ErrInvalidArgument", err)
	}
	if !linkExists(t, e.node, names[0]) || !linkExists(t, e.node, "notcoil") {
		t.Fatal("refused TeardownMany deleted links")
	}

	if err := e.p.TeardownMany(ctx, []string{names[0], names[2], names[4], "coilnotthere00"}); err != nil {
		t.Fatalf("TeardownMany: %v", err)
	}
	for i, n := range names {
		if want := i%2 == 1; linkExists(t, e.node, n) != want {
			t.Fatalf("after TeardownMany link %s exists=%v, want %v", n, !want, want)
		}
	}
	if !linkExists(t, e.node, "notcoil") {
		t.Fatal("TeardownMany deleted a foreign link")
	}
	if r := ipIn(t, e.node, "-4", "route", "show", "proto", "30"); strings.Count(r, "\n") != 2 || !strings.Contains(r, "10.1.1.2 ") || !strings.Contains(r, "10.1.1.4 ") {
		t.Fatalf("routes after TeardownMany = %q", r)
	}
	if err := e.p.TeardownMany(ctx, names); err != nil {
		t.Fatalf("second TeardownMany: %v", err)
	}
	for _, n := range names {
		if linkExists(t, e.node, n) {
			t.Fatalf("%s survived", n)
		}
	}
	if err := e.p.TeardownMany(ctx, names); err != nil {
		t.Fatalf("TeardownMany of gone links: %v", err)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ls, err := e.p.List(ctx)
	if err != nil || len(ls) != 0 {
		t.Fatalf("List on an empty node = %v, %v", ls, err)
	}
	a := setup(t, e, mustPod("c-list-a", "eth0", e.podPath, "10.1.2.1", "fd00::2:1"))
	b := setup(t, e, mustPod("c-list-b", "eth1", e.podPath, "10.1.2.2"))
	// Foreign links and routes: not listed.
	ipIn(t, e.node, "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1")
	ipIn(t, e.node, "link", "set", "foreign0", "up")
	ipIn(t, e.node, "route", "add", "10.9.9.9/32", "dev", "foreign0", "proto", "static")
	ls, err = e.p.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	got := map[string][]string{}
	for _, l := range ls {
		var rs []string
		for _, r := range l.Routes {
			rs = append(rs, r.String())
		}
		got[l.Name] = rs
		if !l.Up || l.Doomed || len(l.MAC) != 6 {
			t.Errorf("link %+v", l)
		}
	}
	want := map[string][]string{
		a.HostVeth: {"10.1.2.1/32", "fd00::2:1/128"},
		b.HostVeth: {"10.1.2.2/32"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	// A link left in the doomed group by an interrupted TeardownMany is listed as doomed.
	ipIn(t, e.node, "link", "set", "dev", b.HostVeth, "group", fmt.Sprint(e.p.DoomedGroup()))
	ls, err = e.p.List(ctx)
	if err != nil || len(ls) != 2 {
		t.Fatalf("List = %v, %v", ls, err)
	}
	for _, l := range ls {
		if l.Doomed != (l.Name == b.HostVeth) {
			t.Fatalf("link %s Doomed=%v", l.Name, l.Doomed)
		}
	}
}

func TestSetupByProcPath(t *testing.T) {
	e := newEnv(t)
	cmd := exec.Command("ip", "netns", "exec", e.pod, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleeper: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// ip netns exec execs the command, so the PID is the sleeper's once it has switched.
	path := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	testutil.Eventually(t, 10*time.Second, func() bool {
		a, err1 := os.Readlink(path)
		b, err2 := os.Readlink("/proc/self/ns/net")
		return err1 == nil && err2 == nil && a != b
	}, "sleeper in pod namespace")
	pod := mustPod("c-proc", "eth0", path, "10.1.0.20")
	setup(t, e, pod)
	if !linkExists(t, e.pod, "eth0") {
		t.Fatal("eth0 not in the pod namespace")
	}
	if err := e.p.Check(context.Background(), pod); err != nil {
		t.Fatalf("Check: %v", err)
	}
}
