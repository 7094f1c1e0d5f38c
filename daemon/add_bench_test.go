package daemon_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/daemon"
	"github.com/coil-net/coil/daemon/daemontest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/netplumb"
)

// benchDaemon runs coild in-process on an etcd with fsync (as in production), with pool
// "default" (IPv4, /27 blocks), and returns it with a Plumber on its node namespace (for
// waiting until DELs are done) and a pod namespace path. With embedded, coild runs its
// own etcd (--embedded-etcd, the one-machine default that bench/cni measures); otherwise
// etcd is a separate server reached over its unix socket.
func benchDaemon(b *testing.B, embedded, viaSocket bool) (*daemon.Daemon, *netplumb.Plumber, string, string) {
	b.Helper()
	return benchDaemonLevel(b, embedded, viaSocket, false)
}

// benchDaemonLevel is benchDaemon, with the cluster raised to feature level 1 when
// raise is set (fixed addresses need it).
func benchDaemonLevel(b *testing.B, embedded, viaSocket, raise bool) (*daemon.Daemon, *netplumb.Plumber, string, string) {
	b.Helper()
	testutil.RequireRoot(b)
	_, nodePath := testutil.NetNS(b, "node")
	_, podPath := testutil.NetNS(b, "pod")
	dir, err := os.MkdirTemp("", "coild-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	cfg := daemon.Config{
		Node: nodeName, Socket: filepath.Join(dir, "coild.sock"),
		StateDir: filepath.Join(dir, "state"), HostNetNS: nodePath, LeaseTTL: 3 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	var cli *clientv3.Client
	if embedded {
		cfg.EmbeddedEtcdDir = filepath.Join(dir, "etcd")
		cfg.EtcdEndpoints = []string{"unix://" + filepath.Join(dir, "etcd.sock")}
		if viaSocket {
			daemon.EtcdViaSocket(&cfg)
		}
	} else {
		etcd := etcdtest.Start(b, etcdtest.WithFsync())
		cli = etcd.Client(b)
		cfg.EtcdEndpoints = etcd.Endpoints()
	}
	d := daemontest.Start(b, cfg).D
	ctx := context.Background()
	if embedded {
		cli, err = clientv3.New(clientv3.Config{Endpoints: cfg.EtcdEndpoints, DialTimeout: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cli.Close() })
	}
	elog := events.NewEtcdLog(cli, events.EtcdConfig{Prefix: "/coil/"})
	b.Cleanup(func() { _ = elog.Close() })
	sub, err := allocator.ParseSubnet("10.100.0.0/16")
	if err != nil {
		b.Fatal(err)
	}
	admin := allocator.Admin{Log: elog, Clock: events.SystemClock{}, Actor: "bench"}
	if err = admin.CreatePool(context.Background(), &events.PoolCreated{Name: "default", BlockSizeBits: 5, Subnets: []events.Subnet{sub}}); err != nil {
		b.Fatal(err)
	}
	if raise {
		testutil.Eventually(b, 30*time.Second, func() bool { return d.Status(ctx) == nil }, "coild ready")
		if err = admin.RequireLevel(ctx, events.Level1, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	testutil.Eventually(b, 30*time.Second, func() bool { return d.Status(ctx) == nil }, "coild ready")
	p, err := netplumb.New(netplumb.Config{HostNetNS: nodePath})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	// coild learns of the pool from its watch: the first ADD may not see it yet.
	warm := &cniproto.Request{ContainerID: "bench-warm", IfName: "eth0", NetNS: podPath}
	testutil.Eventually(b, 30*time.Second, func() bool { _, err := d.Add(ctx, warm); return err == nil }, "coild sees pool default")
	if err := d.Del(ctx, warm); err != nil {
		b.Fatal(err)
	}
	intents := filepath.Join(dir, "state", "del")
	waitDelsDone(b, p, intents)
	return d, p, podPath, intents
}

// waitDelsDone waits until the node has no Coil veth left and no DEL intent (DELs finish
// in the background; the intent goes once the address is released, after the veth
// deletion returned).
func waitDelsDone(b *testing.B, p *netplumb.Plumber, intents string) {
	b.Helper()
	testutil.Eventually(b, 30*time.Second, func() bool {
		links, err := p.List(context.Background())
		ents, derr := os.ReadDir(intents)
		return err == nil && len(links) == 0 && derr == nil && len(ents) == 0
	}, "all DELs done")
}

// BenchmarkAdd measures coild's ADD called in-process (no socket, no plugin exec):
// allocation with an fsynced etcd append, block export when new, veth and routes.
// "sequential": one ADD at a time, each followed by an untimed DEL and wait; reported
// the median ADD in ms; with etcd a separate server, or embedded in coild (as bench/cni
// runs it) reached directly or, the baseline, through its socket. "burst16": 16 concurrent ADDs into 16 pods; reported the median ADD and the
// median wall time of the 16. "sequential-fixed" is "sequential" with a fixed address
// (runtimeConfig "ips", in the node's own block): the claim's path (issue 14).
func BenchmarkAdd(b *testing.B) {
	for _, bc := range []struct {
		name                string
		embedded, viaSocket bool
		fixed               bool
	}{{"sequential", false, false, false}, {"sequential-embedded-socket", true, true, false}, {"sequential-embedded", true, false, false},
		{"sequential-fixed", false, false, true}} {
		b.Run(bc.name, func(b *testing.B) {
			d, p, podPath, intents := benchDaemonLevel(b, bc.embedded, bc.viaSocket, bc.fixed)
			ctx := context.Background()
			var ips []netip.Addr
			if bc.fixed {
				ips = []netip.Addr{netip.MustParseAddr("10.100.0.7")}
			}
			var took []time.Duration
			for i := range b.N + 5 {
				req := &cniproto.Request{ContainerID: fmt.Sprintf("bench-%d", i), IfName: "eth0", NetNS: podPath, IPs: ips}
				t0 := time.Now()
				if _, err := d.Add(ctx, req); err != nil {
					b.Fatalf("ADD: %v", err)
				}
				if i >= 5 { // the first ones take the block
					took = append(took, time.Since(t0))
				}
				if err := d.Del(ctx, req); err != nil {
					b.Fatalf("DEL: %v", err)
				}
				waitDelsDone(b, p, intents)
			}
			b.ReportMetric(testutil.MedianMs(took), "add-ms-p50")
		})
	}
	b.Run("burst16", func(b *testing.B) {
		const n = 16
		d, p, _, intents := benchDaemon(b, false, false)
		var pods []string
		for range n {
			_, path := testutil.NetNS(b, "pod")
			pods = append(pods, path)
		}
		ctx := context.Background()
		var took, walls []time.Duration
		for i := range b.N + 1 {
			var mu sync.Mutex
			var wg sync.WaitGroup
			var each []time.Duration
			t0 := time.Now()
			for j := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req := &cniproto.Request{ContainerID: fmt.Sprintf("bench-%d-%d", i, j), IfName: "eth0", NetNS: pods[j]}
					s := time.Now()
					if _, err := d.Add(ctx, req); err != nil {
						b.Errorf("ADD: %v", err)
					}
					mu.Lock()
					each = append(each, time.Since(s))
					mu.Unlock()
				}()
			}
			wg.Wait()
			wall := time.Since(t0)
			if i > 0 {
				took = append(took, each...)
				walls = append(walls, wall)
			}
			for j := range n {
				if err := d.Del(ctx, &cniproto.Request{ContainerID: fmt.Sprintf("bench-%d-%d", i, j), IfName: "eth0"}); err != nil {
					b.Fatalf("DEL: %v", err)
				}
			}
			waitDelsDone(b, p, intents)
		}
		b.ReportMetric(testutil.MedianMs(took), "add-ms-p50")
		b.ReportMetric(testutil.MedianMs(walls), "wall-ms-p50")
	})
}
