package kube_test

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/kube"
	"github.com/coil-net/coil/kube/kubetest"
	"github.com/coil-net/coil/projection"
)

// liveNode is a node allocator fenced on a real etcd lease, as coild runs it.
type liveNode struct {
	*allocator.Node
	lease clientv3.LeaseID
}

func startNode(t *testing.T, cli *clientv3.Client, elog events.Log, name string) *liveNode {
	t.Helper()
	n := allocatortest.Start(t, cli, elog, name, allocatortest.Options{Prefix: "/coil/"})
	return &liveNode{Node: n.Node, lease: n.Lease}
}

func mkNode(t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	if _, err := cs.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

func owners(t *testing.T, elog events.Log, pool string) map[uint64]string {
	t.Helper()
	st, _, err := allocator.ReadPool(context.Background(), elog, pool) // pool stream and block streams
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]string{}
	for i, o := range st.PoolOwners(pool) {
		out[i] = o.Node
	}
	return out
}

// A deleted Kubernetes node's blocks are reclaimed by the leader, but only once its
// coild's lease is gone; until then every attempt is refused. Afterwards the old
// allocator (stale, lease gone) cannot hand out anything, and the node coming back
// starts without the old blocks.
func TestNodeReclaim(t *testing.T) {
	s := kubetest.Start(t)
	cs := s.Client(t)
	cli := s.Etcd.Client(t) // Coil's log shares the API server's etcd, under /coil/
	elog := events.NewEtcdLog(cli, events.EtcdConfig{Prefix: "/coil/"})
	t.Cleanup(func() { _ = elog.Close() })
	ctx := context.Background()
	admin := &allocator.Admin{Log: elog, Clock: events.SystemClock{}, Actor: "test"}
	sub, err := allocator.ParseSubnet("10.20.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	if err = admin.CreatePool(ctx, &events.PoolCreated{Name: "p", BlockSizeBits: 4, Subnets: []events.Subnet{sub}}); err != nil {
		t.Fatal(err)
	}
	mkNode(t, cs, "n1")
	mkNode(t, cs, "n2")
	n1 := startNode(t, cli, elog, "n1")
	var old []netip.Addr
	for _, id := range []string{"a", "b", "c"} {
		asg, aerr := n1.Allocate(ctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: "p"})
		if aerr != nil {
			t.Fatal(aerr)
		}
		old = append(old, asg.Addrs...)
	}
	if got := owners(t, elog, "p"); got[0] != "n1" || len(got) != 1 {
		t.Fatalf("owners %v, want block 0 owned by n1", got)
	}

	reg := prometheus.NewRegistry()
	rec := kube.NewNodeReclaimer(kube.ReclaimerConfig{
		Client: cs, Admin: &allocator.Admin{Log: elog, Clock: events.SystemClock{}, Actor: "coil-controller"},
		RetryEvery: 100 * time.Millisecond, Registerer: reg, Logger: testutil.Logger(t, slog.LevelInfo),
	})
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- kube.RunLeader(lctx, kube.LeaderConfig{
			Client: cs, Namespace: "kube-system", Identity: "test-1",
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond,
			Registerer: reg, Logger: testutil.Logger(t, slog.LevelInfo),
		}, func(ctx context.Context) {
			if rerr := rec.Run(ctx); rerr != nil {
				t.Errorf("reclaimer: %v", rerr)
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if lerr := <-done; lerr != nil {
			t.Errorf("RunLeader: %v", lerr)
		}
	})
	testutil.Eventually(t, 30*time.Second, func() bool {
		l, gerr := cs.CoordinationV1().Leases("kube-system").Get(ctx, "coil-controller", metav1.GetOptions{})
		return gerr == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "test-1"
	}, "test-1 holds the leader Lease")

	// Node deleted while its coild still holds the lease: refused, again and again.
	if err = cs.CoreV1().Nodes().Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		return counter(t, reg, "coil_node_reclaims_total", "result", "refused_alive") >= 3
	}, "reclaim refused at least 3 times while n1's lease lives")
	if got := owners(t, elog, "p"); got[0] != "n1" {
		t.Fatalf("block 0 taken from n1 while its lease lives: owners %v", got)
	}
	if _, err = n1.Allocate(ctx, allocator.Request{ContainerID: "d", IfName: "eth0", Pool: "p"}); err != nil {
		t.Fatalf("n1 cannot allocate while alive: %v", err)
	}
	if got := rec.Pending(); len(got) != 1 || got[0] != "n1" {
		t.Fatalf("pending %v, want [n1]", got)
	}

	// The lease ends (coild gone, TTL expired): reclaimed.
	if _, err = cli.Revoke(ctx, n1.lease); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		return counter(t, reg, "coil_node_reclaims_total", "result", "reclaimed") == 1 && len(rec.Pending()) == 0
	}, "n1 reclaimed after its lease is gone")
	if got := owners(t, elog, "p"); len(got) != 0 {
		t.Fatalf("owners after reclaim %v, want none", got)
	}
	st := projection.NewNode()
	if _, err = elog.Read(ctx, events.NodeStream("n1"), 1, 0, st.Apply); err != nil {
		t.Fatal(err)
	}
	if !st.Retired || len(st.Attached) != 0 {
		t.Fatalf("n1 after reclaim: retired %v, %d attachments", st.Retired, len(st.Attached))
	}

	// The stale allocator of n1 (lease gone) cannot hand out anything.
	if _, err = n1.Allocate(ctx, allocator.Request{ContainerID: "e", IfName: "eth0", Pool: "p"}); !errors.Is(err, events.ErrFenced) {
		t.Fatalf("stale n1 allocation: %v, want ErrFenced", err)
	}
	// n2 takes the freed block 0; n1 comes back with a new lease and gets another block.
	n2 := startNode(t, cli, elog, "n2")
	a2, err := n2.Allocate(ctx, allocator.Request{ContainerID: "x", IfName: "eth0", Pool: "p"})
	if err != nil {
		t.Fatal(err)
	}
	n1b := startNode(t, cli, elog, "n1")
	if b := n1b.Blocks(); len(b) != 0 {
		t.Fatalf("n1 came back owning %v", b)
	}
	a1, err := n1b.Allocate(ctx, allocator.Request{ContainerID: "a", IfName: "eth0", Pool: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if got := owners(t, elog, "p"); got[0] != "n2" || got[1] != "n1" {
		t.Fatalf("owners %v, want block 0 -> n2, block 1 -> n1", got)
	}
	block0 := netip.MustParsePrefix("10.20.0.0/28")
	for _, a := range a1.Addrs {
		if block0.Contains(a) {
			t.Fatalf("n1 back after reclaim handed out %s from its old block (now n2's: %v)", a, a2.Addrs)
		}
	}
	t.Logf("old n1 addresses %v; after reclaim n2 got %v, n1 got %v", old, a2.Addrs, a1.Addrs)
}
