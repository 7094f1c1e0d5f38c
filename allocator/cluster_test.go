package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdembed"
)

// startCluster starts a 3-member etcd in-process: loopback TCP peer URLs, unix-socket
// client URLs, fast raft timings.
func startCluster(t *testing.T) ([]*embed.Etcd, []string) {
	t.Helper()
	sock, err := os.MkdirTemp("", "coil3m")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sock) })
	const n = 3
	var peers, clients, names, initial []string
	for i := range n {
		u, err := etcdembed.FreeLoopbackURL()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, fmt.Sprint("m", i))
		peers = append(peers, u)
		clients = append(clients, "unix://"+filepath.Join(sock, fmt.Sprintf("m%d.sock", i)))
		initial = append(initial, names[i]+"="+u)
	}
	members := make([]*embed.Etcd, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			members[i], errs[i] = etcdembed.Start(etcdembed.Config{
				Dir: filepath.Join(t.TempDir(), names[i]), ClientURL: clients[i], PeerURL: peers[i], Name: names[i],
				InitialCluster: strings.Join(initial, ","), NoFsync: true, TickMs: 10, ElectionMs: 100, ReadyTimeout: 30 * time.Second,
			})
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, m := range members {
			if m != nil {
				m.Close()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	return members, clients
}

// The log on a 3-member etcd: losing the leader costs an election, then allocations
// resume, all unique.
func TestThreeMemberClusterLosesLeader(t *testing.T) {
	members, clients := startCluster(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: clients, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	log := events.NewEtcdLog(cli, events.EtcdConfig{Prefix: "/coil/"})
	t.Cleanup(func() { _ = log.Close(); _ = cli.Close() }) // before the members close (LIFO)
	ctx := context.Background()
	admin := &allocator.Admin{Log: log, Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.CreatePool(ctx, pool(t, "p", 4, "10.0.0.0/20")); err != nil {
		t.Fatal(err)
	}
	n := allocatortest.Start(t, cli, log, "n1", allocatortest.Options{Prefix: "/coil/"})
	seen := map[netip.Addr]string{}
	take := func(phase string, k int) {
		for i := range k {
			id := fmt.Sprintf("%s-%d", phase, i)
			deadline := time.Now().Add(60 * time.Second)
			for {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				a, err := n.Allocate(cctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: "p"})
				cancel()
				if err == nil {
					if prev, dup := seen[a.Addrs[0]]; dup {
						t.Fatalf("%s got %s, already held by %s", id, a.Addrs[0], prev)
					}
					seen[a.Addrs[0]] = id
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("allocate %s: still failing after 60 s: %v", id, err)
				}
			}
		}
	}
	take("all-up", 20)
	leader := -1
	for i, m := range members {
		if m.Server.Leader() == m.Server.MemberID() {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader")
	}
	start := time.Now()
	members[leader].Close()
	members[leader] = nil
	take("leader-lost", 20)
	t.Logf("leader m%d killed: 20 more allocations done %s later", leader, time.Since(start).Round(time.Millisecond))
	if got := len(n.Attachments()); got != 40 {
		t.Fatalf("node holds %d assignments, want 40", got)
	}
}
