package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/kube/kubetest"
)

func (e *env) admin() *allocator.Admin {
	return &allocator.Admin{Log: e.log, Clock: events.SystemClock{}, Actor: "test"}
}

// nodeLabelsRecorded returns the labels of the node's last NodeLabelsSet (nil: none).
func (e *env) nodeLabelsRecorded() map[string]string {
	var got map[string]string
	for _, ev := range e.nodeEvents() {
		if p, ok := ev.Payload.(*events.NodeLabelsSet); ok {
			got = p.Labels
		}
	}
	return got
}

// TestAddRefusedOnNodeNotSelected: a pod whose pool's node selector does not match the
// node's labels (coild --node-labels, recorded as NodeLabelsSet) is refused with code 7,
// naming the pool, where its choice came from, the node, the selector and the labels;
// nothing is allocated. A pool that selects the node serves it.
func TestAddRefusedOnNodeNotSelected(t *testing.T) {
	ctx := context.Background()
	e := newFakeEnv(t)
	e.defaultPool()
	admin := e.admin()
	sel, err := allocator.ParseNodeSelector("zone=a")
	if err != nil {
		t.Fatal(err)
	}
	for name, subnet := range map[string]string{"zone-a": "10.20.0.0/24", "zone-b": "10.21.0.0/24"} {
		p := &events.PoolCreated{Name: name, BlockSizeBits: 4}
		s, _ := allocator.ParseSubnet(subnet)
		p.Subnets = append(p.Subnets, s)
		if cerr := admin.CreatePool(ctx, p, allocator.WithNodeSelector(sel)); cerr != nil {
			t.Fatal(cerr)
		}
	}
	if _, err = admin.SetNodeSelector(ctx, "zone-b", "zone=b"); err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.NodeLabels = map[string]string{"zone": "b", "rack": "r1"}
	e.startDaemon(cfg)
	client := cniproto.NewClient(e.sock, 30*time.Second)
	if got := e.nodeLabelsRecorded(); len(got) != 2 || got["zone"] != "b" {
		t.Fatalf("labels recorded: %v", got)
	}
	before := len(e.nodeEvents())
	req := fakeReq("c-a")
	req.Pool = "zone-a"
	_, err = client.Add(ctx, req)
	code, msg := protoCode(t, err)
	want := `pool "zone-a" may not be used on node "n1" (chosen by the network config "pool"): ` +
		`its node selector "zone=a" does not match the node's labels rack=r1,zone=b; choose another pool, label the node, or change the selector (coilctl pool set-node-selector)`
	if code != cniproto.CodeNodeNotSelected || msg != want {
		t.Fatalf("ADD on a node the pool does not select: code %d %q\nwant code 7 %q", code, msg, want)
	}
	if n := len(e.nodeEvents()); n != before {
		t.Fatalf("a refused ADD wrote %d events", n-before)
	}
	req = fakeReq("c-b")
	req.Pool = "zone-b"
	if _, err := client.Add(ctx, req); err != nil {
		t.Fatalf("ADD in a pool that selects the node: %v", err)
	}
}

// TestAddDisabledPool: an ADD whose chosen pool is disabled falls through to the next
// pool the operator configured (here coild --default-pool after the network config's
// "pool"); with none enabled it is refused, code 7, naming the pool. An existing
// attachment in the disabled pool keeps its addresses (a repeated ADD returns them).
func TestAddDisabledPool(t *testing.T) {
	ctx := context.Background()
	e := newFakeEnv(t)
	e.defaultPool()
	e.createPool("old", 4, "10.30.0.0/24")
	client, _ := e.startFake()
	kept := fakeReq("c-kept")
	kept.Pool = "old"
	first, err := client.Add(ctx, kept)
	if err != nil {
		t.Fatal(err)
	}
	admin := e.admin()
	if _, err = admin.DisablePool(ctx, "old", "migrating"); err != nil {
		t.Fatal(err)
	}
	// The ADD falls through to pool "default" once coild has seen the disable.
	i := 0
	testutil.Eventually(t, 10*time.Second, func() bool {
		i++
		req := fakeReq(fmt.Sprintf("c-fall-%d", i))
		req.Pool = "old"
		res, aerr := client.Add(ctx, req)
		return aerr == nil && strings.HasPrefix(res.Addrs[0].String(), strings.TrimSuffix(pool4, "0/24"))
	}, "an ADD in disabled pool old falls through to pool default")
	again, err := client.Add(ctx, kept)
	if err != nil || again.Addrs[0] != first.Addrs[0] {
		t.Fatalf("repeated ADD of an attachment in the disabled pool: %v %v, had %v", again, err, first.Addrs)
	}
	if _, err := admin.DisablePool(ctx, "default", ""); err != nil {
		t.Fatal(err)
	}
	var code uint
	var msg string
	testutil.Eventually(t, 10*time.Second, func() bool {
		i++
		req := fakeReq(fmt.Sprintf("c-none-%d", i))
		req.Pool = "old"
		_, err := client.Add(ctx, req)
		if err == nil {
			return false
		}
		code, msg = protoCode(t, err)
		return true
	}, "ADDs refused once no configured pool is enabled")
	want := `pool "old" is disabled (chosen by the network config "pool"): reason: migrating; it hands out no new address; ` +
		"no pool configured after it (default) is enabled; `coilctl pool enable old` enables it, or choose another pool"
	if code != cniproto.CodePoolDisabled || msg != want {
		t.Fatalf("ADD with every configured pool disabled: code %d %q\nwant code 7 %q", code, msg, want)
	}
}

// TestNodeLabelsWatched: with Kubernetes, a `kubectl label node` is recorded in the
// node's stream (NodeLabelsSet) at once, through the informer on coild's own Node
// object, not at the next --reconcile-interval (an hour here); the ADD that the old
// labels refused is then served.
func TestNodeLabelsWatched(t *testing.T) {
	ctx := context.Background()
	e := newFakeEnv(t)
	s := kubetest.Start(t)
	cs := s.Client(t)
	admin := e.admin()
	sel, err := allocator.ParseNodeSelector("zone=a")
	if err != nil {
		t.Fatal(err)
	}
	p := &events.PoolCreated{Name: "zone-a", BlockSizeBits: 4}
	sub, _ := allocator.ParseSubnet("10.20.0.0/24")
	p.Subnets = append(p.Subnets, sub)
	if err = admin.CreatePool(ctx, p, allocator.WithNodeSelector(sel)); err != nil {
		t.Fatal(err)
	}
	if _, err = cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"zone": "b"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.CreateNamespace(t, cs, "plain", nil)
	pod := kubetest.CreatePod(t, cs, "plain", "p1", nodeName, nil)
	cfg := e.config()
	cfg.Kubeconfig = s.Kubeconfig
	cfg.ReconcileEvery = time.Hour
	e.startDaemon(cfg)
	if got := e.nodeLabelsRecorded(); got["zone"] != "b" {
		t.Fatalf("labels recorded at start: %v, want zone=b", got)
	}
	client := cniproto.NewClient(e.sock, 30*time.Second)
	req := fakeReq("c1")
	req.Pool, req.PodNamespace, req.PodName, req.PodUID = "zone-a", pod.Namespace, pod.Name, string(pod.UID)
	if _, err = client.Add(ctx, req); err == nil {
		t.Fatal("ADD in zone-a on a zone=b node succeeded")
	}

	n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["zone"] = "a"
	if _, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return e.nodeLabelsRecorded()["zone"] == "a" },
		"the label change recorded before the next reconcile pass")
	if _, err = client.Add(ctx, req); err != nil {
		t.Fatalf("ADD in zone-a after labelling the node zone=a: %v", err)
	}
}
