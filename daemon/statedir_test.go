package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/daemon"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
)

// runCoild starts coild in network namespace ns with exactly these flags, without
// waiting for anything. The process is stopped at the end of the test if it still runs;
// its output is shown when the test failed.
func (e *env) runCoild(ns string, args ...string) *testutil.Proc {
	e.t.Helper()
	return e.startIn(ns, fmt.Sprintf("coild %v", args), append([]string{coildBin(e.t)}, args...)...)
}

// coildArgs are the flags of a working coild for node n1 with this socket and state dir.
func (e *env) coildArgs(sock, stateDir string) []string {
	return []string{"--node", nodeName, "--etcd-endpoints", e.etcd.Endpoints()[0], "--socket", sock, "--state-dir", stateDir,
		"--metrics-addr", "", "--lease-ttl", "3s", "--reconcile-interval", "200ms", "--log-level", "debug"}
}

// TestCoildRefusesBadFlags: every flag value coild cannot use makes it exit at start
// with status 1 and a message naming the flag, the value and the rule, before it creates
// its state directory or socket. None falls back to a default, and none is found later
// (the intervals panicked after "ready"; --lease-ttl 2500ms and --export-table 254 ran).
func TestCoildRefusesBadFlags(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	for i, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--reconcile-interval", "-1s"}, "--reconcile-interval -1s: must be positive"},
		{[]string{"--reconcile-interval", "0s"}, "--reconcile-interval 0s: must be positive"},
		{[]string{"--metrics-interval", "-1s"}, "--metrics-interval -1s: must be positive"},
		{[]string{"--block-grace", "-5m"}, "--block-grace -5m0s: must be positive"},
		{[]string{"--leak-grace", "0s"}, "--leak-grace 0s: must be positive"},
		{[]string{"--leak-check-interval", "-1s"}, "--leak-check-interval -1s: must be positive"},
		{[]string{"--lease-ttl", "1s"}, "--lease-ttl 1s: must be a whole number of seconds, at least 2s"},
		{[]string{"--lease-ttl", "2500ms"}, "--lease-ttl 2.5s: must be a whole number of seconds, at least 2s"},
		{[]string{"--lease-ttl", "-5s"}, "--lease-ttl -5s: must be a whole number of seconds"},
		{[]string{"--lease-ttl", "5"}, `invalid argument "5" for "--lease-ttl" flag`},
		{[]string{"--export-table", "254"}, "--export-table 254: that is the kernel's main table"},
		{[]string{"--export-table", "255"}, "--export-table 255: that is the kernel's local table"},
		{[]string{"--export-table", "253"}, "--export-table 253: that is the kernel's default table"},
		{[]string{"--export-table", "0"}, "--export-table 0: that is the kernel's unspec table"},
		{[]string{"--export-table", "-1"}, "--export-table -1: a routing table is 1-2147483647"},
		{[]string{"--export-table", "4294967296"}, "--export-table 4294967296: a routing table is 1-2147483647"},
		{[]string{"--export-table", "main"}, `invalid argument "main" for "--export-table" flag`},
		{[]string{"--route-protocol", "12"}, "--route-protocol 12: that protocol (bird) marks routes Coil does not write"},
		{[]string{"--route-protocol", "3"}, "--route-protocol 3: that protocol (boot)"},
		{[]string{"--route-protocol", "256"}, "--route-protocol 256: a route protocol is 5-255"},
		{[]string{"--etcd-endpoints", ""}, "--etcd-endpoints: no etcd endpoint given (the list is empty)"},
		{[]string{"--etcd-endpoints", e.etcd.Endpoints()[0] + ","}, "--etcd-endpoints: \"" + e.etcd.Endpoints()[0] + ",\": entry 2 is empty"},
		{[]string{"--node", ""}, "--node: name is empty"},
		{[]string{"--node", "N_1"}, `--node: name "N_1" is invalid`},
		{[]string{"--default-pool", ""}, "--default-pool: name is empty"},
		{[]string{"--etcd-prefix", "coil"}, `--etcd-prefix "coil": must start with /`},
		{[]string{"--socket", ""}, "--socket is empty"},
		{[]string{"--state-dir", ""}, "--state-dir is empty"},
		{[]string{"--metrics-addr", "nonsense"}, `--metrics-addr "nonsense": want HOST:PORT`},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--mtu", "575"}, "--mtu 575: below 576, the minimum MTU of IPv4 (RFC 791); 1280 or more when the pool has IPv6 (0, the default: the MTU of the interface of the node's default route)"},
		{[]string{"--mtu", "-1"}, "--mtu -1: below 576"},
		{[]string{"--mtu", "65536"}, "--mtu 65536: above 65535, the largest MTU of a link"},
		{[]string{"--mtu", "9000.5"}, `invalid argument "9000.5" for "--mtu" flag`},
		{[]string{"--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"stray"}, `unknown command "stray" for "coild"`},
	} {
		t.Run(strings.Join(tc.args, "="), func(t *testing.T) {
			sock := filepath.Join(e.sockDir, fmt.Sprintf("bad%d.sock", i))
			stateDir := filepath.Join(t.TempDir(), "state")
			p := e.runCoild(e.nodeNS, append(e.coildArgs(sock, stateDir), tc.args...)...)
			code := p.Exited(30 * time.Second)
			out := p.Out.String()
			if code != 1 || !strings.HasPrefix(out, "coild: ") || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, output:\n%s\nwant exit 1 and %q", code, out, tc.want)
			}
			if _, err := os.Stat(sock); err == nil {
				t.Errorf("socket %s created", sock)
			}
			if _, err := os.Stat(stateDir); err == nil && tc.args[0] != "--state-dir" {
				t.Errorf("state dir %s created", stateDir)
			}
		})
	}
	if evs := e.nodeEvents(); len(evs) != 0 {
		t.Errorf("a refused coild wrote %d events to the node stream", len(evs))
	}
}

// TestSecondCoildSharingStateDir (issue 10, item 2): a second coild for the same node,
// in another network namespace, with the same --state-dir. It is refused at start with a
// message naming the directory and the first coild's PID; the first keeps its lease and
// every pod keeps its address (before: the second revoked the first's lease, then
// released every address as "veth missing" from its own, empty namespace).
func TestSecondCoildSharingStateDir(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	first := e.startCoild("")
	e.waitReady()
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	e.addPods(c, list, "keep0001", "keep0002")
	before := len(e.nodeEvents())
	lease := e.aliveLease()

	otherNS, _ := testutil.NetNS(t, "other")
	second := e.runCoild(otherNS, e.coildArgs(filepath.Join(e.sockDir, "second.sock"), e.stateDir)...)
	code := second.Exited(30 * time.Second)
	want := fmt.Sprintf("coild: --state-dir %s is locked by another coild (pid %d, node %s", e.stateDir, first.Cmd.Process.Pid, nodeName)
	if out := second.Out.String(); code != 1 || !strings.Contains(out, want) {
		t.Fatalf("second coild: exit %d, output:\n%s\nwant exit 1 and %q", code, out, want)
	}
	if got := e.aliveLease(); got != lease {
		t.Fatalf("liveness key moved from lease %x to %x", lease, got)
	}
	if evs := e.nodeEvents(); len(evs) != before {
		t.Fatalf("node stream grew from %d to %d events: %v", before, len(evs), evs[before:])
	}
	if len(e.held()) != 2 {
		t.Fatalf("held %v, want both pods", e.held())
	}
	if err := cniproto.NewClient(e.sock, 2*time.Second).Status(ctx); err != nil {
		t.Fatalf("first coild not ready any more: %v", err)
	}
}

// aliveLease returns the lease holding the node's liveness key (0: none).
func (e *env) aliveLease() int64 {
	e.t.Helper()
	r, err := e.cli.Get(context.Background(), events.AliveKey("/coil/", nodeName))
	if err != nil {
		e.t.Fatal(err)
	}
	if len(r.Kvs) == 0 {
		return 0
	}
	return r.Kvs[0].Lease
}

// TestCoildInForeignNamespaceKeepsAddresses (issue 10, item 2): the node's coild stops;
// another coild for the same node starts in another, empty network namespace with a
// state directory of its own. Once the first lease expired it serves the node, but it
// cannot see the pods' veths, and it must not take their absence for the pods being
// gone: it keeps every address (and says so). Back in the node's namespace, the first
// coild serves the pods again.
func TestCoildInForeignNamespaceKeepsAddresses(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	first := e.startCoild("")
	e.waitReady()
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	paths := e.addPods(c, list, "keep0001", "keep0002")
	first.Stop(t)

	otherNS, _ := testutil.NetNS(t, "other")
	sock2 := filepath.Join(e.sockDir, "other.sock")
	other := e.runCoild(otherNS, e.coildArgs(sock2, filepath.Join(t.TempDir(), "other-state"))...)
	c2 := cniproto.NewClient(sock2, 2*time.Second)
	testutil.Eventually(t, 60*time.Second, func() bool {
		return c2.Status(ctx) == nil
	}, "the other coild ready once the first lease expired")
	// Wait until its reconciler has looked at both attachments, several passes.
	testutil.Eventually(t, 30*time.Second, func() bool {
		return strings.Count(other.Out.String(), "not releasing the address of a missing veth") >= 2
	}, "the other coild's reconciler kept both addresses")
	// The passes that logged it did not release (the release would have come instead
	// of the message).
	if h := e.held(); len(h) != 2 {
		t.Fatalf("held %v, want both pods' addresses", h)
	}
	for id := range paths {
		if rel := e.released(id); len(rel) != 0 {
			t.Fatalf("%s released by a coild that cannot see its veth: %+v", id, rel[0])
		}
	}
	if err := other.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := other.Exited(30 * time.Second); code != 0 {
		t.Fatalf("other coild exited %d", code)
	}

	// The node's own coild again: the pods are there, DEL works.
	e.startCoild("")
	e.waitReady()
	if d := e.divergence(); d != "" {
		t.Fatalf("node diverges from the log: %s", d)
	}
	if err := c.DelNetworkList(ctx, list, podRT("keep0001", paths["keep0001"])); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	waitFor(t, func() bool { return len(e.held()) == 1 }, "DEL released keep0001")
}

// TestLeaseRevokedOnlyWhenProvablyOwn (issue 10, item 2): at start coild revokes the
// lease its state directory recorded only when the record proves it is its own (same
// node, same etcd cluster and prefix, and the lease still holds the node's liveness key).
func TestLeaseRevokedOnlyWhenProvablyOwn(t *testing.T) {
	ctx := context.Background()
	grant := func(e *env, key string) clientv3.LeaseID {
		t.Helper()
		g, err := e.cli.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Put(ctx, key, "someone", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		return g.ID
	}
	alive := func(e *env, id clientv3.LeaseID) bool {
		t.Helper()
		r, err := e.cli.TimeToLive(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return r.TTL > 0
	}
	clusterID := func(e *env) uint64 {
		t.Helper()
		r, err := e.cli.Get(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.ClusterId
	}
	writeRecord := func(e *env, content string) {
		t.Helper()
		if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.stateDir, "lease"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	record := func(node string, cluster uint64, lease clientv3.LeaseID) string {
		b, _ := json.Marshal(map[string]any{"node": node, "clusterID": cluster, "prefix": "/coil/", "lease": int64(lease)})
		return string(b)
	}

	// Another node's lease in the record (the old, plain format or the new one): coild
	// starts on its own lease and the other node keeps its lease.
	for _, format := range []string{"plain", "json"} {
		t.Run("another node's lease, "+format, func(t *testing.T) {
			e := newEnv(t)
			e.defaultPool()
			other := grant(e, events.AliveKey("/coil/", "n2"))
			content := fmt.Sprint(int64(other))
			if format == "json" {
				content = record(nodeName, clusterID(e), other)
			}
			writeRecord(e, content)
			e.startDaemon(e.config())
			if !alive(e, other) {
				t.Fatalf("coild revoked lease %x, which holds node n2's liveness key", other)
			}
		})
	}
	// The node's liveness key held by the recorded lease, but the record is from another
	// etcd cluster: not revoked; coild waits for it, then gives up with ErrNodeTaken.
	t.Run("another etcd cluster", func(t *testing.T) {
		e := newEnv(t)
		e.defaultPool()
		held := grant(e, events.AliveKey("/coil/", nodeName))
		writeRecord(e, record(nodeName, clusterID(e)^1, held))
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		d, err := daemon.New(rctx, e.config())
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Run(rctx); !errors.Is(err, daemon.ErrNodeTaken) {
			t.Fatalf("Run = %v, want ErrNodeTaken", err)
		}
		if !alive(e, held) {
			t.Fatalf("coild revoked lease %x recorded for another etcd cluster", held)
		}
	})
	// The record proves the lease is the directory's own (a crashed coild): revoked at
	// once, coild starts.
	t.Run("own lease", func(t *testing.T) {
		e := newEnv(t)
		e.defaultPool()
		own := grant(e, events.AliveKey("/coil/", nodeName))
		writeRecord(e, record(nodeName, clusterID(e), own))
		e.startDaemon(e.config())
		if alive(e, own) {
			t.Fatalf("own previous lease %x not revoked", own)
		}
	})
}
