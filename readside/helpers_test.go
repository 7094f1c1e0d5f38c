package readside_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/logio"
	"github.com/coil-net/coil/projection"
	"github.com/coil-net/coil/readside"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the start of every test log's clock.
var t0 = time.Date(2030, 1, 7, 0, 0, 0, 0, time.UTC)

// at is t0 plus h hours.
func at(h float64) time.Time { return t0.Add(time.Duration(h * float64(time.Hour))) }

// memLog is an in-memory log, closed when the test ends.
func memLog(t *testing.T) *events.MemLog {
	t.Helper()
	log := events.NewMemLog()
	t.Cleanup(func() { _ = log.Close() })
	return log
}

// writer appends hand-made events to a log, tracking each stream's head.
type writer struct {
	t     *testing.T
	log   events.Log
	heads map[events.Stream]events.Version
}

func newWriter(t *testing.T, log events.Log) *writer {
	t.Helper()
	return &writer{t: t, log: log, heads: map[events.Stream]events.Version{}}
}

// add appends payloads to stream s in one batch, stamped when, and returns the events
// as appended (with Seq, Hash and Revision).
func (w *writer) add(s events.Stream, when time.Time, payloads ...events.Payload) []*events.Event {
	w.t.Helper()
	evs := make([]*events.Event, len(payloads))
	for i, p := range payloads {
		evs[i] = &events.Event{Time: when, Actor: "test", Payload: p}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := w.log.Append(ctx, events.AppendRequest{Stream: s, Expected: w.heads[s], Events: evs})
	if err != nil {
		w.t.Fatalf("append to %s: %v", s, err)
	}
	w.heads[s] = h
	return evs
}

// snapshot appends a Snapshot of stream s's state (folded from the whole stream).
func (w *writer) snapshot(s events.Stream, when time.Time) *events.Event {
	w.t.Helper()
	st := projection.NewState()
	if _, err := w.log.Read(context.Background(), s, 1, 0, st.Apply); err != nil {
		w.t.Fatal(err)
	}
	snap, err := projection.SnapshotOf(st.StreamState(s))
	if err != nil {
		w.t.Fatal(err)
	}
	return w.add(s, when, snap)[0]
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func pool(name string, bits uint8, subnets ...string) *events.PoolCreated {
	p := &events.PoolCreated{Name: name, BlockSizeBits: bits}
	for _, s := range subnets {
		p.Subnets = append(p.Subnets, events.Subnet{IPv4: pfx(s)})
	}
	return p
}

// assigned is an AddressAssigned of container id (interface eth0) for pod ns/name.
func assigned(id, ns, name, pool string, block uint64, addrs ...string) *events.AddressAssigned {
	p := &events.AddressAssigned{ContainerID: id, IfName: "eth0", PodNamespace: ns, PodName: name, Pool: pool, Block: block}
	for _, a := range addrs {
		p.Addrs = append(p.Addrs, addr(a))
	}
	return p
}

func released(a *events.AddressAssigned, reason string) *events.AddressReleased {
	return &events.AddressReleased{ContainerID: a.ContainerID, IfName: a.IfName, Pool: a.Pool, Block: a.Block, Addrs: a.Addrs, Reason: reason}
}

// smallLog writes a log of two nodes sharing pool p (10.0.0.0/28, blocks of 4):
//
//	1h  pool p created; n1 takes block 0, n2 block 1
//	2h  n1: web-0 (c1) 10.0.0.0; n2: db-0 (c2) 10.0.0.4
//	3h  n1: web-0 released; web-1 (c3) 10.0.0.1
//	4h  n2 gives block 1 back after db-0 is released; n1 takes block 1 (10.0.0.4-7)
//	5h  n1: web-0 again (c4) 10.0.0.4
func smallLog(t *testing.T, log events.Log) *writer {
	t.Helper()
	w := newWriter(t, log)
	p, n1, n2 := events.PoolStream("p"), events.NodeStream("n1"), events.NodeStream("n2")
	w.add(events.ClusterStream, at(1), pool("p", 2, "10.0.0.0/28"))
	w.add(p, at(1), &events.BlockAssigned{Index: 0, Node: "n1"}, &events.BlockAssigned{Index: 1, Node: "n2"})
	w.add(n1, at(1), &events.NodeRegistered{Node: "n1", Lease: 1})
	w.add(n2, at(1), &events.NodeRegistered{Node: "n2", Lease: 2})
	c1 := assigned("c1aaaaaaaaaaaaaaaa", "shop", "web-0", "p", 0, "10.0.0.0")
	c2 := assigned("c2bbbbbbbbbbbbbbbb", "data", "db-0", "p", 1, "10.0.0.4")
	w.add(n1, at(2), c1)
	w.add(n2, at(2), c2)
	c3 := assigned("c3cccccccccccccccc", "shop", "web-1", "p", 0, "10.0.0.1")
	w.add(n1, at(3), released(c1, "CNI DEL"), c3)
	w.add(n2, at(4), released(c2, "CNI DEL"))
	w.add(p, at(4), &events.BlockReleased{Index: 1, Node: "n2", Reason: "empty"}, &events.BlockAssigned{Index: 1, Node: "n1"})
	w.add(n1, at(5), assigned("c4dddddddddddddddd", "shop", "web-0", "p", 1, "10.0.0.4"))
	return w
}

// fold folds every stream of log from #1 one event after another: the reference the
// read side's results are checked against.
func fold(t *testing.T, log events.Log, keep func(*events.Event) bool) *projection.State {
	t.Helper()
	ctx := context.Background()
	heads, _, err := log.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	st := projection.NewState()
	for s := range heads {
		stop := false
		_, err := log.Read(ctx, s, 1, 0, func(e *events.Event) error {
			if stop || (keep != nil && !keep(e)) {
				stop = true
				return nil
			}
			return st.Apply(e)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func hashOf(t *testing.T, st *projection.State) events.Hash {
	t.Helper()
	h, err := st.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// etcdLog is an EtcdLog on a fresh in-process etcd, with its client.
func etcdLog(t *testing.T) (*events.EtcdLog, *clientv3.Client) {
	t.Helper()
	c := etcdtest.Start(t)
	cl := c.Client(t)
	lg := events.NewEtcdLog(cl, events.EtcdConfig{})
	t.Cleanup(func() { _ = lg.Close() })
	return lg, cl
}

// archivedLog is smallLog in etcd, with a snapshot of every stream at 6h, n1's web-1
// released at 7h, and the events before the snapshots archived (logio.Archive) to the
// returned file. before maps each hour 0-8 to the state's hash at that time, taken
// before the archive; hook (if set) is called just before the archive.
func archivedLog(t *testing.T, hook func(*events.EtcdLog)) (lg *events.EtcdLog, cl *clientv3.Client, file string, before map[int]events.Hash) {
	t.Helper()
	lg, cl = etcdLog(t)
	w := smallLog(t, lg)
	for _, s := range []events.Stream{events.ClusterStream, events.PoolStream("p"), events.NodeStream("n1"), events.NodeStream("n2")} {
		w.snapshot(s, at(6))
	}
	c3 := assigned("c3cccccccccccccccc", "shop", "web-1", "p", 0, "10.0.0.1")
	w.add(events.NodeStream("n1"), at(7), released(c3, "CNI DEL"))
	before = map[int]events.Hash{}
	for h := range 9 {
		p := readside.Point{Time: at(float64(h))}
		before[h] = hashOf(t, fold(t, lg, p.Includes))
	}
	if hook != nil {
		hook(lg)
	}
	file = filepath.Join(t.TempDir(), "archive.jsonl")
	res, err := logio.Archive(t.Context(), lg, file, logio.ArchiveOptions{Cut: logio.Cut{Time: at(6.5)}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted == 0 {
		t.Fatal("nothing archived")
	}
	return lg, cl, file, before
}

// churnLog writes a log of pod churn on nodes n1 and n2 (pool p, 10.1.0.0/16, blocks of
// 256: n1 block 0, n2 block 1): pod shop/web-i (container cid(i)) is assigned on node
// n(i%2+1) and released 6 pods later, for i < pods; shop/db-0 is assigned first on n1
// and released only at the end, and assigned again on n2 after that.
func churnLog(t *testing.T, log events.Log, pods int) {
	t.Helper()
	w := newWriter(t, log)
	w.add(events.ClusterStream, at(0), pool("p", 8, "10.1.0.0/16"))
	w.add(events.PoolStream("p"), at(0), &events.BlockAssigned{Index: 0, Node: "n1"}, &events.BlockAssigned{Index: 1, Node: "n2"})
	node := func(i int) events.Stream { return events.NodeStream(fmt.Sprintf("n%d", i%2+1)) }
	asg := func(i int) *events.AddressAssigned {
		return assigned(cid(i), "shop", fmt.Sprintf("web-%d", i), "p", uint64(i%2), fmt.Sprintf("10.1.%d.%d", i%2, i/2))
	}
	db := assigned(cid(1000), "shop", "db-0", "p", 0, "10.1.0.200")
	w.add(events.NodeStream("n1"), at(0), db)
	for i := range pods {
		w.add(node(i), at(1+float64(i)/10), asg(i))
		if i >= 6 {
			w.add(node(i-6), at(1+float64(i)/10), released(asg(i-6), "CNI DEL"))
		}
	}
	w.add(events.NodeStream("n1"), at(20), released(db, "CNI DEL"))
	w.add(events.NodeStream("n2"), at(21), assigned(cid(1001), "shop", "db-0", "p", 1, "10.1.1.200"))
}

// cid is a 64-hex container ID.
func cid(i int) string { return fmt.Sprintf("%08x%056x", 0xc0ffee000+i, i) }
