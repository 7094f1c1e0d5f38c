package daemon_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/kube"
	"github.com/coil-net/coil/kube/kubetest"
)

// kubeRT is a runtime config as kubelet passes it: CNI_ARGS with the pod's identity
// (uid "" leaves K8S_POD_UID out, as older runtimes do).
func kubeRT(id, netnsPath, ns, name, uid string) *libcni.RuntimeConf {
	args := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", name}}
	if uid != "" {
		args = append(args, [2]string{"K8S_POD_UID", uid})
	}
	return &libcni.RuntimeConf{ContainerID: id, NetNS: netnsPath, IfName: "eth0", Args: args}
}

// assigned returns the AddressAssigned event of a container.
func (e *env) assigned(containerID string) *events.AddressAssigned {
	e.t.Helper()
	for _, ev := range e.nodeEvents() {
		if p, ok := ev.Payload.(*events.AddressAssigned); ok && p.ContainerID == containerID {
			return p
		}
	}
	return nil
}

// With a real API server: the pod annotation beats the namespace annotation, which
// beats the network config, which beats --default-pool; a pool named by an annotation
// that does not exist is a clear error (no fallback, nothing held); the pod's UID is
// recorded, from CNI_ARGS or from the informer.
func TestKubePoolSelection(t *testing.T) {
	e := newEnv(t)
	s := kubetest.Start(t)
	cs := s.Client(t)
	e.createPool("default", 4, "10.201.0.0/24")
	e.createPool("nc", 4, "10.202.0.0/24")
	e.createPool("nsp", 4, "10.203.0.0/24")
	e.createPool("podp", 4, "10.204.0.0/24")
	kubetest.CreateNamespace(t, cs, "plain", nil)
	kubetest.CreateNamespace(t, cs, "annot", map[string]string{kube.PoolAnnotation: "nsp"})
	p1 := kubetest.CreatePod(t, cs, "annot", "p1", nodeName, map[string]string{kube.PoolAnnotation: "podp"})
	p2 := kubetest.CreatePod(t, cs, "annot", "p2", nodeName, nil)
	p3 := kubetest.CreatePod(t, cs, "plain", "p3", nodeName, nil)
	p3b := kubetest.CreatePod(t, cs, "plain", "p3b", nodeName, nil)
	p4 := kubetest.CreatePod(t, cs, "plain", "p4", nodeName, map[string]string{kube.PoolAnnotation: "missing"})
	cfg := e.config()
	cfg.Kubeconfig = s.Kubeconfig
	e.startDaemon(cfg)
	ctx := context.Background()
	c := e.cni()
	withNC, plain := e.netListWith(`,"pool":"nc"`), e.netList()

	for _, tc := range []struct {
		id      string
		list    *libcni.NetworkConfigList
		pod     *corev1.Pod
		sendUID bool
		subnet  string
	}{
		{"k1", withNC, p1, true, "10.204.0.0/24"},  // pod annotation
		{"k2", withNC, p2, true, "10.203.0.0/24"},  // namespace annotation
		{"k3", withNC, p3, false, "10.202.0.0/24"}, // network config; UID from the informer
		{"k3b", plain, p3b, true, "10.201.0.0/24"}, // --default-pool
	} {
		_, nsPath := e.pod("k")
		res, err := c.AddNetworkList(ctx, tc.list, kubeRT(tc.id, nsPath, tc.pod.Namespace, tc.pod.Name, map[bool]string{true: string(tc.pod.UID)}[tc.sendUID]))
		if err != nil {
			t.Fatalf("ADD %s (%s/%s): %v", tc.id, tc.pod.Namespace, tc.pod.Name, err)
		}
		addrs := addrsOf(t, res)
		if len(addrs) != 1 || !netip.MustParsePrefix(tc.subnet).Contains(addrs[0]) {
			t.Errorf("ADD %s: %v, want an address of %s", tc.id, addrs, tc.subnet)
		}
		if a := e.assigned(tc.id); a == nil || a.PodUID != string(tc.pod.UID) || a.PodName != tc.pod.Name {
			t.Errorf("ADD %s: AddressAssigned %+v, want pod %s uid %s", tc.id, a, tc.pod.Name, tc.pod.UID)
		}
	}

	// The pod names a pool that does not exist: a clear error, and the namespace, the
	// network config and the default are NOT used instead.
	_, nsPath := e.pod("k")
	_, err := c.AddNetworkList(ctx, withNC, kubeRT("k4", nsPath, "plain", "p4", string(p4.UID)))
	code, msg := cniCode(t, err)
	if code != 7 || !strings.Contains(msg, `pool "missing" (pod annotation coil.cybozu.com/pool) does not exist`) {
		t.Errorf("ADD with a missing pool: code %d %q", code, msg)
	}
	t.Logf("missing pool: code %d: %s", code, msg)
	// A pod Kubernetes does not know (or no longer knows with that UID): an error too.
	_, nsPath = e.pod("k")
	_, err = c.AddNetworkList(ctx, withNC, kubeRT("k5", nsPath, "plain", "p1-gone", ""))
	code, msg = cniCode(t, err)
	if code != 4 || !strings.Contains(msg, "pod plain/p1-gone not found") {
		t.Errorf("ADD for an unknown pod: code %d %q", code, msg)
	}
	if h := e.held(); len(h) != 4 {
		t.Errorf("held %v, want exactly the 4 successful ADDs", h)
	}
	for _, v := range veths(t, e.nodeNS) {
		if v == hostVeth("k4") || v == hostVeth("k5") {
			t.Errorf("failed ADD left veth %s", v)
		}
	}
}

// With a real API server: an address whose pod is deleted is released only after
// --leak-grace and a fresh re-check, with the reason in the event; an address whose pod
// exists is never released; a pod recreated under the same name (new UID) keeps working
// while the old incarnation's leaked address is collected. Then every coild metric in
// docs/metrics.md is scraped.
func TestKubeLeaksAndMetrics(t *testing.T) {
	e := newEnv(t)
	s := kubetest.Start(t)
	cs := s.Client(t)
	e.createPool("default", 4, "10.205.0.0/24")
	kubetest.CreateNamespace(t, cs, "app", nil)
	web := kubetest.CreatePod(t, cs, "app", "web-0", nodeName, nil)
	gone := kubetest.CreatePod(t, cs, "app", "gone-0", nodeName, nil)
	cfg := e.config()
	cfg.Kubeconfig = s.Kubeconfig
	cfg.LeakGrace = 2 * time.Second
	cfg.LeakCheckInterval = 200 * time.Millisecond
	cfg.MetricsInterval = 200 * time.Millisecond
	cfg.MetricsAddr = freeLoopbackAddr(t)
	e.startDaemon(cfg)
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	_, webNS := e.pod("w")
	if _, err := c.AddNetworkList(ctx, list, kubeRT("web-1", webNS, "app", "web-0", string(web.UID))); err != nil {
		t.Fatal(err)
	}
	_, goneNS := e.pod("g")
	if _, err := c.AddNetworkList(ctx, list, kubeRT("gone-1", goneNS, "app", "gone-0", string(gone.UID))); err != nil {
		t.Fatal(err)
	}

	deleted := time.Now()
	kubetest.DeletePod(t, cs, "app", "gone-0")
	var rel []*events.AddressReleased
	testutil.Eventually(t, 60*time.Second, func() bool {
		rel = e.released("gone-1")
		return len(rel) == 1
	}, "the deleted pod's address is released")
	if want := "pod app/gone-0 (" + string(gone.UID) + ") deleted: leaked address"; rel[0].Reason != want {
		t.Errorf("reason %q, want %q", rel[0].Reason, want)
	}
	for _, ev := range e.nodeEvents() {
		if p, ok := ev.Payload.(*events.AddressReleased); ok && p.ContainerID == "gone-1" {
			if waited := ev.Time.Sub(deleted); waited < cfg.LeakGrace {
				t.Errorf("released %s after the pod's deletion, before the %s grace period", waited, cfg.LeakGrace)
			} else {
				t.Logf("released %s after the pod's deletion (grace %s)", waited.Round(time.Millisecond), cfg.LeakGrace)
			}
		}
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return !slices.Contains(veths(t, e.nodeNS), hostVeth("gone-1")) }, "leaked pod's veth deleted")
	// The collector ran well past the grace period: the existing pod's address stays.
	if _, ok := e.held()[attachKey{"web-1", "eth0"}]; !ok || len(e.released("web-1")) != 0 {
		t.Fatal("web-0's address was released while the pod exists")
	}

	// web-0 is recreated under the same name (a StatefulSet): the new pod gets an
	// address and works; the old incarnation's address (its DEL lost) is collected.
	kubetest.DeletePod(t, cs, "app", "web-0")
	web2 := kubetest.CreatePod(t, cs, "app", "web-0", nodeName, nil)
	_, web2NS := e.pod("w")
	res, err := c.AddNetworkList(ctx, list, kubeRT("web-2", web2NS, "app", "web-0", string(web2.UID)))
	if err != nil {
		t.Fatalf("ADD for the recreated pod: %v", err)
	}
	testutil.Eventually(t, 60*time.Second, func() bool { return len(e.released("web-1")) == 1 }, "the old web-0's address is released")
	if r := e.released("web-1")[0].Reason; !strings.Contains(r, "a new pod of that name has UID "+string(web2.UID)) {
		t.Errorf("reason %q", r)
	}
	if _, ok := e.held()[attachKey{"web-2", "eth0"}]; !ok || len(e.released("web-2")) != 0 {
		t.Fatal("the recreated pod's address was released")
	}
	addr := addrsOf(t, res)[0]
	if err := ping(t, e.nodeNS, addr); err != nil {
		t.Fatalf("the recreated pod does not answer at %s: %v", addr, err)
	}

	// Metrics: the GC releases by reason, pool blocks, log lag, and every documented name.
	base := "http://" + cfg.MetricsAddr
	var text string
	var last error
	testutil.Eventually(t, 20*time.Second, func() bool {
		text, last = scrape(t, base+"/metrics")
		return last == nil && sample(text, `coil_pool_blocks{pool="default",state="used"}`) == 1
	}, "coil_pool_blocks sampled (last error %v)", &last)
	for series, want := range map[string]float64{
		`coil_gc_releases_total{reason="pod_deleted"}`:      1,
		`coil_gc_releases_total{reason="pod_replaced"}`:     1,
		`coil_address_releases_total{reason="leak_gc"}`:     2,
		`coil_pool_blocks{pool="default",state="free"}`:     15,
		`coil_log_lag_revisions`:                            0,
		`coil_log_append_retries_total{stream_kind="pool"}`: 0,
	} {
		if got := sample(text, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	testutil.CheckDocumented(t, text, testutil.DocumentedMetrics(t, "coild"))
}
