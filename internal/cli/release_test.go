package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/kube/kubetest"
)

// allocPod allocates for a pod with its UID ("" name: an attachment made for no pod).
func (e *env) allocPod(n *allocator.Node, id, ns, name, uid string) *allocator.Assignment {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := n.Allocate(ctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: "default", PodNamespace: ns, PodName: name, PodUID: uid})
	if err != nil {
		e.t.Fatalf("Allocate(%s): %v", id, err)
	}
	return a
}

// releasedReason returns the reason of containerID's AddressReleased on node, "" if none.
func (e *env) releasedReason(node, containerID string) (string, bool) {
	e.t.Helper()
	var reason string
	found := false
	if _, err := e.log.Read(context.Background(), events.NodeStream(node), 1, 0, func(ev *events.Event) error {
		if p, ok := ev.Payload.(*events.AddressReleased); ok && p.ContainerID == containerID {
			reason, found = p.Reason, true
		}
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return reason, found
}

// TestAddressRelease (issue 14, item 7): `address release` releases an address whose pod
// is gone, refuses (exit 4) while the pod exists or when it cannot tell, unless --force,
// which the reason records; every refusal writes nothing.
func TestAddressRelease(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "default", "10.0.0.0/24", "--block-size-bits", "4")
	e.ok("pool", "create", "dual", "10.1.0.0/24,fd00:1::/120", "--block-size-bits", "3")
	s := kubetest.Start(t)
	cs := s.Client(t)
	kc := []string{"--kubeconfig", s.Kubeconfig}
	kubetest.CreateNamespace(t, cs, "ns", nil)
	n1, _ := e.startNode("n1")
	live := kubetest.CreatePod(t, cs, "ns", "live", "n1", nil)
	gone := kubetest.CreatePod(t, cs, "ns", "gone", "n1", nil)
	old := kubetest.CreatePod(t, cs, "ns", "sts-0", "n1", nil)
	aLive := e.allocPod(n1, "clive", "ns", "live", string(live.UID))
	aGone := e.allocPod(n1, "cgone", "ns", "gone", string(gone.UID))
	aOld := e.allocPod(n1, "cold", "ns", "sts-0", string(old.UID))
	aNoPod := e.allocPod(n1, "cnopod", "", "", "")
	aNoKube := e.allocPod(n1, "cnokube", "ns", "live", string(live.UID))
	kubetest.DeletePod(t, cs, "ns", "gone")
	kubetest.DeletePod(t, cs, "ns", "sts-0")
	kubetest.CreatePod(t, cs, "ns", "sts-0", "n1", nil) // the StatefulSet made a new pod of that name
	ctx := context.Background()
	dual, err := n1.Allocate(ctx, allocator.Request{ContainerID: "cdual", IfName: "eth0", Pool: "dual", PodNamespace: "ns", PodName: "gone-dual", PodUID: "u-dual"})
	if err != nil {
		t.Fatal(err)
	}
	badKC := filepath.Join(t.TempDir(), "bad.kubeconfig")
	if err := os.WriteFile(badKC, []byte("this: is: not: a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadKC := filepath.Join(t.TempDir(), "dead.kubeconfig")
	dead := strings.Replace(mustRead(t, s.Kubeconfig), s.URL, "https://127.0.0.1:1", 1)
	if err := os.WriteFile(deadKC, []byte(dead), 0o600); err != nil {
		t.Fatal(err)
	}
	live0 := aLive.Addrs[0].String()

	t.Run("refusals write nothing", func(t *testing.T) {
		before := e.ok("events", "-o", "json")
		for _, tc := range []struct {
			args []string
			code int
			want []string
		}{
			{[]string{"address", "release", "10.0.0.300", "--reason", "x", "--yes"}, cli.ExitUsage, []string{`"10.0.0.300" is not an IP address`}},
			{[]string{"address", "release", live0, "--yes"}, cli.ExitUsage, []string{"--reason is required"}},
			{[]string{"address", "release", live0, "--reason", "  ", "--yes"}, cli.ExitUsage, []string{"--reason is required"}},
			{[]string{"address", "release", live0, "--reason", "x"}, cli.ExitUsage, []string{"address release would release address " + live0 + " (every address of its attachment): pass --yes (-y)"}},
			{[]string{"address", "release", "10.0.0.200", "--reason", "x", "--yes"}, cli.ExitNotFound, []string{"address 10.0.0.200 is free (pool default, block 12, not assigned to any node)"}},
			{[]string{"address", "release", "192.168.9.9", "--reason", "x", "--yes"}, cli.ExitNotFound, []string{"address 192.168.9.9 is free (in no pool)"}},
			{append([]string{"address", "release", live0, "--reason", "x", "--yes"}, kc...), cli.ExitRefused,
				[]string{"address " + live0 + " is held on node n1 by container clive, interface eth0, pod ns/live, and pod ns/live (" + string(live.UID) + ") still exists: release it once its pod is gone, or pass --force"}},
			{[]string{"address", "release", aNoKube.Addrs[0].String(), "--reason", "x", "--yes"}, cli.ExitRefused,
				[]string{"no Kubernetes access (no --kubeconfig, no $KUBECONFIG, no ~/.kube/config, not in a pod): coilctl cannot tell whether pod ns/live", "pass --force"}},
			{append([]string{"address", "release", aNoPod.Addrs[0].String(), "--reason", "x", "--yes"}, kc...), cli.ExitRefused,
				[]string{"the attachment records no pod (it was not made for a Kubernetes pod), so coilctl cannot tell whether its container still exists"}},
			{[]string{"address", "release", aGone.Addrs[0].String(), "--reason", "x", "--yes", "--kubeconfig", deadKC, "--timeout", "3s"}, cli.ExitRefused,
				[]string{"coilctl cannot tell whether pod ns/gone", "kube: API server unavailable", "pass --force"}},
			{[]string{"address", "release", aGone.Addrs[0].String(), "--reason", "x", "--yes", "--kubeconfig", badKC}, cli.ExitUsage, []string{"--kubeconfig: kubeconfig " + badKC}},
			{[]string{"address", "release", aGone.Addrs[0].String(), "--reason", "x", "--yes", "--kubeconfig", "/nonexistent/kc"}, cli.ExitUsage, []string{"--kubeconfig: kubeconfig /nonexistent/kc"}},
		} {
			e.fails(tc.code, tc.args, tc.want...)
		}
		if after := e.ok("events", "-o", "json"); after != before {
			t.Fatal("a refused release changed the log")
		}
	})

	t.Run("pod gone", func(t *testing.T) {
		out := e.ok(append([]string{"address", "release", aGone.Addrs[0].String(), "--reason", "leaked by a partition", "--yes"}, kc...)...)
		if want := fmt.Sprintf("released %s on node n1 (container cgone, interface eth0, pod ns/gone)\n", aGone.Addrs[0]); out != want {
			t.Errorf("stdout %q, want %q", out, want)
		}
		if r, _ := e.releasedReason("n1", "cgone"); r != "leaked by a partition" {
			t.Errorf("reason %q", r)
		}
		e.fails(cli.ExitNotFound, append([]string{"address", "release", aGone.Addrs[0].String(), "--reason", "again", "--yes"}, kc...), "is free (pool default")
	})

	t.Run("pod replaced, json", func(t *testing.T) {
		out := e.ok(append([]string{"-o", "json", "address", "release", aOld.Addrs[0].String(), "--reason", "old incarnation", "--yes"}, kc...)...)
		var v map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatal(err)
		}
		if v["podCheck"] != "replaced" || v["forced"] != false || v["reason"] != "old incarnation" || v["containerID"] != "cold" || v["node"] != "n1" {
			t.Errorf("json %s", out)
		}
	})

	t.Run("dual-stack releases both families", func(t *testing.T) {
		out := e.ok(append([]string{"address", "release", dual.Addrs[1].String(), "--reason", "gone", "--yes"}, kc...)...)
		if !strings.Contains(out, dual.Addrs[0].String()+","+dual.Addrs[1].String()) {
			t.Errorf("stdout %q", out)
		}
		for _, a := range dual.Addrs {
			e.fails(cli.ExitNotFound, []string{"address", "show", a.String()}, "is free")
		}
	})

	t.Run("force", func(t *testing.T) {
		e.ok(append([]string{"address", "release", live0, "--reason", "operator knows", "--force", "--yes"}, kc...)...)
		r, _ := e.releasedReason("n1", "clive")
		if want := "forced (pod ns/live (" + string(live.UID) + ") still exists): operator knows"; r != want {
			t.Errorf("reason %q, want %q", r, want)
		}
		e.ok("address", "release", aNoPod.Addrs[0].String(), "--reason", "cnitool test", "--force", "--yes")
		if r, _ := e.releasedReason("n1", "cnopod"); !strings.HasPrefix(r, "forced (the attachment records no pod") {
			t.Errorf("reason %q", r)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		a := aNoKube.Addrs[0].String()
		r := e.runTTY("n", "address", "release", a, "--reason", "x", "--force")
		if r.code != cli.ExitRefused || !strings.Contains(r.stderr, "Release "+a+" on node n1: container cnokube, interface eth0, pod ns/live, since ") ||
			!strings.Contains(r.stderr, "--force: no Kubernetes access") || !strings.Contains(r.stderr, "coilctl: not confirmed: address "+a+" was not released") {
			t.Fatalf("exit %d, terminal:\n%s", r.code, r.stderr)
		}
		if _, ok := e.releasedReason("n1", "cnokube"); ok {
			t.Fatal("released though the answer was n")
		}
		// Refused before asking.
		if r := e.runTTY("y", "address", "release", a, "--reason", "x"); r.code != cli.ExitRefused || strings.Contains(r.stderr, prompt) {
			t.Fatalf("exit %d, terminal:\n%s", r.code, r.stderr)
		}
		if r := e.runTTY("y", "address", "release", a, "--reason", "x", "--force"); r.code != 0 || !strings.Contains(r.stdout, "released "+a) {
			t.Fatalf("exit %d, stdout %q, terminal:\n%s", r.code, r.stdout, r.stderr)
		}
	})
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
