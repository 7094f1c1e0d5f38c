package logio_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/logio"
	"github.com/coil-net/coil/projection"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

type tickClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *tickClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// site is one etcd with Coil's log on it and node allocators running like coild's.
type site struct {
	t     *testing.T
	etcd  *etcdtest.Cluster
	cli   *clientv3.Client
	log   *events.EtcdLog
	clock *tickClock
	nodes map[string]*allocator.Node
	stop  []func()
	split bool // createPool makes split pools (block streams), else legacy ones
}

func newSite(t *testing.T) *site {
	t.Helper()
	c := etcdtest.Start(t)
	cli := c.Client(t)
	lg := events.NewEtcdLog(cli, events.EtcdConfig{})
	s := &site{t: t, etcd: c, cli: cli, log: lg, clock: &tickClock{t: t0}, nodes: map[string]*allocator.Node{}}
	t.Cleanup(s.close)
	return s
}

func (s *site) close() {
	for i := len(s.stop) - 1; i >= 0; i-- {
		s.stop[i]()
	}
	s.stop = nil
	_ = s.log.Close()
}

func (s *site) createPool(name string, bits uint8, subnet string) {
	s.t.Helper()
	sn, err := allocator.ParseSubnet(subnet)
	if err != nil {
		s.t.Fatal(err)
	}
	admin := &allocator.Admin{Log: s.log, Clock: s.clock, Actor: "test"}
	opts := []allocator.PoolOption{allocator.LegacyLayout()}
	if s.split {
		opts = []allocator.PoolOption{allocator.BlockStreams()}
	}
	if err := admin.CreatePool(ctxT(s.t), &events.PoolCreated{Name: name, BlockSizeBits: bits, Subnets: []events.Subnet{sn}}, opts...); err != nil {
		s.t.Fatal(err)
	}
}

// layouts runs a test on pools in both layouts: "legacy" (every block in pool/NAME, as
// logs written before block streams) and "split" (a stream per block).
func layouts(t *testing.T, f func(t *testing.T, split bool)) {
	t.Helper()
	t.Run("legacy", func(t *testing.T) { f(t, false) })
	t.Run("split", func(t *testing.T) { f(t, true) })
}

// streamCount is how many streams the log holds.
func streamCount(t *testing.T, lg events.Log) int {
	t.Helper()
	heads, _, err := lg.Streams(ctxT(t), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(heads)
}

// startNode runs a node allocator fenced on a real lease (as coild does): Load, Register, Run.
func (s *site) startNode(name string) *allocator.Node {
	s.t.Helper()
	n := allocatortest.Start(s.t, s.cli, s.log, name, allocatortest.Options{Clock: s.clock})
	s.stop = append(s.stop, n.Stop)
	s.nodes[name] = n.Node
	return n.Node
}

func (s *site) alloc(node, id string) netip.Addr {
	s.t.Helper()
	a, err := s.nodes[node].Allocate(ctxT(s.t), allocator.Request{ContainerID: id, IfName: "eth0", Pool: "default", PodNamespace: "ns", PodName: id})
	if err != nil {
		s.t.Fatalf("allocate %s on %s: %+v", id, node, err)
	}
	return a.Addrs[0]
}

func (s *site) release(node, id string) {
	s.t.Helper()
	if _, err := s.nodes[node].Release(ctxT(s.t), id, "eth0", "test"); err != nil {
		s.t.Fatal(err)
	}
}

// fullState replays every stream at one revision from the given start (1: full replay)
// and returns the state's hash.
func fullState(t *testing.T, lg events.Log, from func(events.Stream) uint64) (*projection.State, events.Hash) {
	t.Helper()
	ctx := ctxT(t)
	heads, rev, err := lg.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	st := projection.NewState()
	for s := range heads {
		if _, err = lg.Read(ctx, s, from(s), rev, st.Apply); err != nil {
			t.Fatalf("replay %s: %+v", s, err)
		}
	}
	h, err := st.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return st, h
}

func fromOne(events.Stream) uint64 { return 1 }

// workload allocates on three nodes, releases some, and returns container -> (node, addr).
func (s *site) workload(prefix string, perNode int) map[string]held {
	s.t.Helper()
	out := map[string]held{}
	for _, nm := range []string{"n1", "n2", "n3"} {
		if s.nodes[nm] == nil {
			s.startNode(nm)
		}
		for i := range perNode {
			id := fmt.Sprintf("%s-%s-%03d", prefix, nm, i)
			out[id] = held{node: nm, addr: s.alloc(nm, id)}
		}
		for i := 0; i < perNode; i += 3 {
			id := fmt.Sprintf("%s-%s-%03d", prefix, nm, i)
			s.release(nm, id)
			delete(out, id)
		}
	}
	return out
}

type held struct {
	node string
	addr netip.Addr
}

func export(t *testing.T, lg *events.EtcdLog, path string) logio.Header {
	t.Helper()
	var buf bytes.Buffer
	h, err := logio.Export(ctxT(t), lg, &buf, logio.ExportOptions{Now: t0})
	if err != nil {
		t.Fatalf("export: %+v", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func verifyFile(t *testing.T, v *logio.Verifier, path string) (logio.Header, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return v.File(ctxT(t), f)
}

// Disaster recovery: export, lose etcd, import into a fresh one, restart the nodes.
func TestRecovery(t *testing.T) { layouts(t, testRecovery) }

func testRecovery(t *testing.T, split bool) {
	t.Helper()
	a := newSite(t)
	a.split = split
	a.createPool("default", 3, "10.20.0.0/24") // 32 blocks of 8
	holding := a.workload("c", 20)
	_, before := fullState(t, a.log, fromOne)
	path := filepath.Join(t.TempDir(), "coil.jsonl")
	h := export(t, a.log, path)
	// legacy: cluster, pool/default, 3 nodes; split: cluster, 3 nodes and their blocks
	if n := streamCount(t, a.log); h.Kind != logio.KindExport || len(h.Streams) != n || (!split && n != 5) || (split && n < 7) {
		t.Fatalf("header: %+v", h)
	}
	if _, err := verifyFile(t, logio.NewVerifier(), path); err != nil {
		t.Fatalf("verify export: %+v", err)
	}
	a.close()
	a.etcd.Stop() // etcd and its data are gone

	b := newSite(t) // fresh etcd, fresh data directory
	b.split = split
	if _, err := logio.Import(ctxT(t), b.log, path, logio.ImportOptions{}); err != nil {
		t.Fatalf("import: %+v", err)
	}
	if _, err := logio.NewVerifier().Live(ctxT(t), b.log); err != nil {
		t.Fatalf("verify imported log: %+v", err)
	}
	_, after := fullState(t, b.log, fromOne)
	if after != before {
		t.Fatalf("state hash after import %s, before %s", after, before)
	}
	// A second import is refused and writes nothing.
	if _, err := logio.Import(ctxT(t), b.log, path, logio.ImportOptions{}); !errors.Is(err, logio.ErrNotEmpty) {
		t.Fatalf("second import: err = %v, want ErrNotEmpty", err)
	}
	// --force with a file that does not verify keeps the log there; with a good one it
	// replaces it.
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err = os.WriteFile(bad, raw[:len(raw)-40], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = logio.Import(ctxT(t), b.log, bad, logio.ImportOptions{Force: true}); !errors.Is(err, logio.ErrBroken) {
		t.Fatalf("forced import of a truncated file: err = %v, want ErrBroken", err)
	}
	if _, h := fullState(t, b.log, fromOne); h != before {
		t.Fatal("a forced import of a bad file changed the log")
	}
	if _, err = logio.Import(ctxT(t), b.log, path, logio.ImportOptions{Force: true}); err != nil {
		t.Fatalf("forced import: %+v", err)
	}
	if _, h := fullState(t, b.log, fromOne); h != before {
		t.Fatal("forced import: state differs")
	}

	// Restart the node allocators on the new etcd: every container keeps its address
	// (a repeated ADD is idempotent) and new ones never get a held address.
	taken := map[netip.Addr]string{}
	for id, hd := range holding {
		if b.nodes[hd.node] == nil {
			b.startNode(hd.node)
		}
		if got := b.alloc(hd.node, id); got != hd.addr {
			t.Errorf("%s on %s: address %s after recovery, had %s", id, hd.node, got, hd.addr)
		}
		taken[hd.addr] = id
	}
	for _, nm := range []string{"n1", "n2", "n3"} {
		for i := range 10 {
			id := fmt.Sprintf("new-%s-%d", nm, i)
			ad := b.alloc(nm, id)
			if other, ok := taken[ad]; ok {
				t.Fatalf("%s got %s, held by %s", id, ad, other)
			}
			taken[ad] = id
		}
	}
}

// One changed digit in one event's payload: verify names the stream and sequence, import
// refuses and writes nothing.
func TestTamperedExport(t *testing.T) {
	a := newSite(t)
	a.createPool("default", 3, "10.20.0.0/24")
	a.workload("c", 6)
	path := filepath.Join(t.TempDir(), "coil.jsonl")
	export(t, a.log, path)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	var victim int
	for i, l := range lines {
		if strings.Contains(l, `"stream":"node/n2"`) && strings.Contains(l, `"seq":4,`) {
			victim = i
		}
	}
	if victim == 0 {
		t.Fatal("no node/n2 #4 in the export")
	}
	i := strings.Index(lines[victim], `"addrs":["10.20.0.`)
	if i < 0 {
		t.Fatalf("node/n2 #4 holds no address: %s", lines[victim])
	}
	j := i + len(`"addrs":["10.20.0.`)
	b := []byte(lines[victim])
	if b[j] == '9' {
		b[j] = '8'
	} else {
		b[j]++
	}
	lines[victim] = string(b)
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err = os.WriteFile(bad, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}

	_, err = verifyFile(t, logio.NewVerifier(), bad)
	var be *logio.BrokenError
	if !errors.Is(err, logio.ErrBroken) || !errors.As(err, &be) || be.Stream != "node/n2" || be.Seq != 4 {
		t.Fatalf("verify: err = %v, want chain broken at node/n2 #4", err)
	}
	if !strings.HasPrefix(err.Error(), "chain broken at node/n2 #4: ") {
		t.Fatalf("message %q", err.Error())
	}

	c := newSite(t)
	if _, err = logio.Import(ctxT(t), c.log, bad, logio.ImportOptions{}); !errors.Is(err, logio.ErrBroken) {
		t.Fatalf("import: err = %v, want ErrBroken", err)
	}
	r, err := c.cli.Get(ctxT(t), "/coil/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 0 {
		t.Fatalf("import of a tampered file wrote %d keys", r.Count)
	}

	// The live log: one changed byte in a stored event, then a stray key.
	ctx := ctxT(t)
	key := a.log.Keys().Event("node/n2", 3)
	got, err := a.cli.Get(ctx, key)
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("get %s: %v", key, err)
	}
	val := bytes.Clone(got.Kvs[0].Value)
	val[len(val)-1] ^= 1
	if _, err = a.cli.Put(ctx, key, string(val)); err != nil {
		t.Fatal(err)
	}
	_, err = logio.NewVerifier().Live(ctx, a.log)
	if !errors.As(err, &be) || be.Stream != "node/n2" || (be.Seq != 3 && be.Seq != 4) {
		t.Fatalf("verify live with a changed value: err = %v, want chain broken at node/n2 #3 or #4", err)
	}
	if _, err = a.cli.Put(ctx, key, string(got.Kvs[0].Value)); err != nil {
		t.Fatal(err)
	}
	if _, err = logio.NewVerifier().Live(ctx, a.log); err != nil {
		t.Fatalf("verify live after repair: %+v", err)
	}
	if _, err = a.cli.Put(ctx, a.log.Keys().Event("node/zz", 1), "stray"); err != nil {
		t.Fatal(err)
	}
	if _, err = logio.NewVerifier().Live(ctx, a.log); !errors.Is(err, logio.ErrBroken) || !strings.Contains(err.Error(), "stray") {
		t.Fatalf("verify live with a stray key: %v", err)
	}

	// A dropped line (a gap) is named too.
	gap := append(append([]string{}, lines[:victim]...), lines[victim+1:]...)
	if err = os.WriteFile(bad, []byte(strings.Join(gap, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = verifyFile(t, logio.NewVerifier(), bad)
	if !errors.As(err, &be) || be.Stream != "node/n2" || be.Seq != 5 {
		t.Fatalf("verify with a line dropped: err = %v, want chain broken at node/n2 #5", err)
	}
}

// Snapshot every stream, archive before the snapshots: the live log still verifies, the
// archive and the live log verify as one chain, Node.Load starts from the snapshots and
// its state equals a full replay of archive + live log.
func TestSnapshotAndArchive(t *testing.T) { layouts(t, testSnapshotAndArchive) }

func testSnapshotAndArchive(t *testing.T, split bool) {
	t.Helper()
	a := newSite(t)
	a.split = split
	a.createPool("default", 3, "10.20.0.0/24")
	holding := a.workload("c", 12)
	_, before := fullState(t, a.log, fromOne)
	ctx := ctxT(t)
	heads, _, err := a.log.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for s := range heads {
		r, serr := logio.Snapshot(ctx, a.log, s, a.clock.Now, "test")
		if serr != nil || r.Skipped {
			t.Fatalf("snapshot %s: %+v %+v", s, r, serr)
		}
		// Idempotent: the last event is a snapshot now.
		if r2, serr := logio.Snapshot(ctx, a.log, s, a.clock.Now, "test"); serr != nil || !r2.Skipped || r2.Seq != r.Seq {
			t.Fatalf("second snapshot %s: %+v %v", s, r2, serr)
		}
	}
	_, rev, err := a.log.Head(ctx, events.ClusterStream)
	if err != nil {
		t.Fatal(err)
	}
	more := a.workload("d", 4) // after the snapshots: stays live
	for k, v := range more {
		holding[k] = v
	}
	_, full := fullState(t, a.log, fromOne)
	if full == before {
		t.Fatal("the workload after the snapshots changed nothing")
	}

	path := filepath.Join(t.TempDir(), "archive.jsonl")
	res, err := logio.Archive(ctx, a.log, path, logio.ArchiveOptions{Cut: logio.Cut{Revision: rev + 1}, Now: t0})
	if err != nil {
		t.Fatalf("archive: %+v", err)
	}
	if len(res.Header.Streams) != len(heads) || res.Deleted != res.Header.Total() || res.Deleted == 0 {
		t.Fatalf("archive: %+v", res)
	}
	// Reading archived streams from #1 fails clearly; from the snapshot it works.
	if _, err = a.log.Read(ctx, events.NodeStream("n1"), 1, 0, func(*events.Event) error { return nil }); !errors.Is(err, events.ErrCompacted) {
		t.Fatalf("read archived stream from #1: %v", err)
	}
	if _, err = logio.NewVerifier().Live(ctx, a.log); err != nil {
		t.Fatalf("live log after archive: %+v", err)
	}
	v := logio.NewVerifier()
	if _, verr := verifyFile(t, v, path); verr != nil {
		t.Fatalf("archive alone: %+v", verr)
	}
	if _, verr := v.Live(ctx, a.log); verr != nil {
		t.Fatalf("archive then live: %+v", verr)
	}
	// Nothing more to archive before the same cut.
	res2, err := logio.Archive(ctx, a.log, path+".2", logio.ArchiveOptions{Cut: logio.Cut{Revision: rev + 1}})
	if err != nil || len(res2.Header.Streams) != 0 {
		t.Fatalf("second archive: %+v %v", res2, err)
	}

	// Full replay of archive + live log.
	st := projection.NewState()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range strings.Split(strings.TrimSpace(readAll(t, f)), "\n")[1:] {
		var e events.Event
		if verr := e.UnmarshalJSON([]byte(l)); verr != nil {
			t.Fatal(verr)
		}
		if verr := st.Apply(&e); verr != nil {
			t.Fatalf("replay archive: %+v", verr)
		}
	}
	heads, rev2, err := a.log.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for s := range heads {
		from := res.Header.Streams[s].Last + 1
		if _, verr := a.log.Read(ctx, s, from, rev2, st.Apply); verr != nil {
			t.Fatalf("replay live %s from #%d: %+v", s, from, verr)
		}
	}
	replayed, err := st.Hash()
	if err != nil {
		t.Fatal(err)
	}
	if replayed != full {
		t.Fatalf("archive + live replay %s, full replay before archiving %s", replayed, full)
	}
	// coilctl's and coild's way: from the snapshot pointers.
	fromSnaps, err := loadFromSnapshots(ctx, a.log)
	if err != nil {
		t.Fatal(err)
	}
	if fromSnaps != full {
		t.Fatalf("state from snapshots %s, full replay %s", fromSnaps, full)
	}

	// Node allocators restarted on the archived log keep every address.
	a.close()
	a.nodes = map[string]*allocator.Node{}
	for id, hd := range holding {
		if a.nodes[hd.node] == nil {
			a.startNode(hd.node)
		}
		if got := a.alloc(hd.node, id); got != hd.addr {
			t.Errorf("%s: %s after restart from the snapshot, had %s", id, got, hd.addr)
		}
	}

	// An export of the archived log imports and verifies (streams start at snapshots).
	exp := filepath.Join(t.TempDir(), "after.jsonl")
	export(t, a.log, exp)
	b := newSite(t)
	if _, verr := logio.Import(ctx, b.log, exp, logio.ImportOptions{}); verr != nil {
		t.Fatalf("import of an archived log's export: %+v", verr)
	}
	got, err := loadFromSnapshots(ctx, b.log)
	if err != nil {
		t.Fatal(err)
	}
	want, err := loadFromSnapshots(ctx, a.log)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("imported state %s, source %s", got, want)
	}
	// And the archive chains into the imported log as well.
	v = logio.NewVerifier()
	if _, err := verifyFile(t, v, path); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Live(ctx, b.log); err != nil {
		t.Fatalf("archive then imported live log: %+v", err)
	}
}

func loadFromSnapshots(ctx context.Context, lg events.Log) (events.Hash, error) {
	heads, rev, err := lg.Streams(ctx, "", 0)
	if err != nil {
		return events.Hash{}, err
	}
	names := make([]string, 0, len(heads))
	for s := range heads {
		names = append(names, string(s))
	}
	sort.Strings(names)
	st := projection.NewState()
	for _, s := range names {
		from, err := events.StartSeq(ctx, lg, events.Stream(s), rev)
		if err != nil {
			return events.Hash{}, err
		}
		if _, err := lg.Read(ctx, events.Stream(s), from, rev, st.Apply); err != nil {
			return events.Hash{}, err
		}
	}
	return st.Hash()
}

func readAll(t *testing.T, f *os.File) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := b.ReadFrom(f); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
