package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/internal/testutil"
)

// -update regenerates testdata/logs: the golden log and the expected outputs.
var update *bool

func init() {
	// Another test file of the package may define -update too; share it.
	if f := flag.Lookup("update"); f != nil {
		if g, ok := f.Value.(flag.Getter); ok {
			if b, ok := g.Get().(bool); ok {
				v := b
				update = &v
				return
			}
		}
	}
	update = flag.Bool("update", false, "rewrite the golden files in testdata/logs")
}

func updating() bool {
	if f := flag.Lookup("update"); f != nil {
		return f.Value.String() == "true"
	}
	return *update
}

// setClock is a clock the generator moves by hand.
type setClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *setClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *setClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

const goldenLog = "week.jsonl"

func logsDir(t *testing.T) string {
	t.Helper()
	root := testutil.Root(t)
	return filepath.Join(root, "testdata", "logs")
}

// generateWeek builds a realistic log on an in-memory log with a hand-moved clock: two
// pools defined by an operator, three nodes, pods created and deleted every 20 minutes
// from Monday 2030-01-07 09:00 to Wednesday 18:00, empty blocks released after their
// grace period, a subnet added, a spare pool created and deleted, and node n3 reclaimed
// by an operator on Wednesday. Everything is deterministic (seeded choices, fixed leases,
// every node reloads the log before acting, so no append ever races).
func generateWeek(t *testing.T) []*events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lg := events.NewMemLog()
	defer lg.Close()
	clk := &setClock{t: time.Date(2030, 1, 7, 9, 0, 0, 0, time.UTC)}
	alice := &allocator.Admin{Log: lg, Clock: clk, Actor: "coilctl:alice"}
	bob := &allocator.Admin{Log: lg, Clock: clk, Actor: "coilctl:bob"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	subnet := func(s string) events.Subnet {
		sn, err := allocator.ParseSubnet(s)
		must(err)
		return sn
	}
	// Pools in pool streams: week.jsonl is a log as written before block streams, which
	// must keep replaying (and its outputs stay the same).
	must(alice.CreatePool(ctx, &events.PoolCreated{Name: "default", BlockSizeBits: 4, Subnets: []events.Subnet{subnet("10.1.2.0/24")}}, allocator.LegacyLayout()))
	clk.set(clk.Now().Add(2 * time.Minute))
	must(alice.CreatePool(ctx, &events.PoolCreated{Name: "dual", BlockSizeBits: 3, Subnets: []events.Subnet{subnet("10.2.0.0/24,fd00:2::/120")}}, allocator.LegacyLayout()))

	nodes := map[string]*allocator.Node{}
	names := []string{"n1", "n2", "n3"}
	var wg sync.WaitGroup
	runCtx, stopNodes := context.WithCancel(ctx)
	defer func() { stopNodes(); wg.Wait() }()
	for i, name := range names {
		clk.set(clk.Now().Add(time.Minute))
		n := allocator.NewNode(allocator.NodeConfig{Node: name, Log: lg, Clock: clk, Lease: int64(0x7a3c0000 + i)})
		_, _, err := n.Load(ctx)
		must(err)
		must(n.Register(ctx))
		wg.Add(1)
		go func() { defer wg.Done(); n.Run(runCtx) }()
		nodes[name] = n
	}

	type pod struct {
		node, ns, name, id, pool string
	}
	rng := rand.New(rand.NewPCG(7, 11))
	var live []pod
	count := map[string]int{}
	starts := map[string]int{}
	// start runs a pod: a new container (the pod's name and its start count make the ID).
	start := func(node, ns, name, pool string) {
		starts[ns+"/"+name]++
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%s#%d", ns, name, starts[ns+"/"+name])))
		p := pod{node: node, ns: ns, name: name, id: hex.EncodeToString(sum[:]), pool: pool}
		uid := sha256.Sum256([]byte(ns + "/" + name))
		n := nodes[node]
		_, _, err := n.Load(ctx)
		must(err)
		_, err = n.Allocate(ctx, allocator.Request{ContainerID: p.id, IfName: "eth0", Pool: pool, PodNamespace: ns, PodName: name,
			PodUID: fmt.Sprintf("%x-%x-%x-%x-%x", uid[0:4], uid[4:6], uid[6:8], uid[8:10], uid[10:16])})
		must(err)
		live = append(live, p)
	}
	newPod := func(node, ns, app, pool string) {
		count[app]++
		start(node, ns, fmt.Sprintf("%s-%d", app, count[app]), pool)
	}
	stop := func(i int, reason string) pod {
		p := live[i]
		live = append(live[:i], live[i+1:]...)
		n := nodes[p.node]
		_, _, err := n.Load(ctx)
		must(err)
		_, err = n.Release(ctx, p.id, "eth0", reason)
		must(err)
		return p
	}
	apps := []struct{ ns, app, pool string }{
		{"shop", "web", "default"}, {"shop", "cart", "default"}, {"shop", "web", "default"},
		{"edge", "proxy", "dual"}, {"shop", "web", "default"},
	}
	alive := []string{"n1", "n2", "n3"}
	// A stateful set: data/db-0, db-1, db-2 keep their names across restarts.
	for i := range 3 {
		clk.set(clk.Now().Add(time.Minute))
		start(names[i], "data", fmt.Sprintf("db-%d", i), "default")
	}
	end := time.Date(2030, 1, 9, 18, 0, 0, 0, time.UTC)
	for step := 0; clk.Now().Before(end); step++ {
		clk.set(time.Date(2030, 1, 7, 9, 10, 0, 0, time.UTC).Add(time.Duration(step) * 10 * time.Minute))
		now := clk.Now()
		switch {
		case now.Equal(time.Date(2030, 1, 8, 12, 0, 0, 0, time.UTC)):
			must(alice.AddSubnet(ctx, "default", subnet("10.1.3.0/24")))
		case now.Equal(time.Date(2030, 1, 8, 13, 30, 0, 0, time.UTC)):
			must(bob.CreatePool(ctx, &events.PoolCreated{Name: "spare", BlockSizeBits: 5, Subnets: []events.Subnet{subnet("10.9.0.0/24")}}, allocator.LegacyLayout()))
		case now.Equal(time.Date(2030, 1, 9, 10, 10, 0, 0, time.UTC)):
			must(bob.DeletePool(ctx, "spare"))
		case now.Equal(time.Date(2030, 1, 9, 11, 10, 0, 0, time.UTC)):
			// n3 is drained (all its pods but one stuck pod stop, its empty blocks are
			// released), then its machine dies and an operator reclaims it. (Reclaim
			// releases in no particular order: one address and one block keep the
			// log deterministic.) Its pods start elsewhere.
			var moved []pod
			stuck := -1
			for i := 0; i < len(live); {
				if live[i].node != "n3" {
					i++
					continue
				}
				if stuck < 0 {
					stuck = i
					moved = append(moved, live[i])
					i++
					continue
				}
				clk.set(clk.Now().Add(time.Minute))
				moved = append(moved, stop(i, "CNI DEL"))
			}
			_, err := nodes["n3"].ReleaseEmptyBlocks(ctx, 0)
			must(err)
			clk.set(clk.Now().Add(10 * time.Minute))
			_, err = bob.Reclaim(ctx, "n3", events.AliveKey("", "n3"), "machine decommissioned")
			must(err)
			alive = []string{"n1", "n2"}
			kept := live[:0]
			for _, p := range live {
				if p.node != "n3" {
					kept = append(kept, p)
				}
			}
			live = kept
			for _, p := range moved {
				clk.set(clk.Now().Add(time.Minute))
				if p.ns == "data" {
					start(alive[rng.IntN(len(alive))], p.ns, p.name, p.pool)
					continue
				}
				newPod(alive[rng.IntN(len(alive))], p.ns, p.name[:strings.LastIndexByte(p.name, '-')], p.pool)
			}
			continue
		}
		switch r := rng.IntN(10); {
		case r < 5 || len(live) < 14:
			a := apps[rng.IntN(len(apps))]
			newPod(alive[rng.IntN(len(alive))], a.ns, a.app, a.pool)
		case r == 5:
			// A db pod restarts: same name, new container, maybe another node.
			var dbs []int
			for i, p := range live {
				if p.ns == "data" {
					dbs = append(dbs, i)
				}
			}
			if len(dbs) > 0 {
				p := stop(dbs[rng.IntN(len(dbs))], "CNI DEL")
				start(alive[rng.IntN(len(alive))], p.ns, p.name, p.pool)
			}
		}
		if len(live) > 16 || (len(live) > 10 && rng.IntN(2) == 0) {
			reason := "CNI DEL"
			if rng.IntN(8) == 0 {
				reason = "veth missing"
			}
			i := rng.IntN(len(live))
			if live[i].ns != "data" {
				stop(i, reason)
			}
		}
		if step%6 == 5 {
			for _, name := range alive {
				n := nodes[name]
				_, _, err := n.Load(ctx)
				must(err)
				_, err = n.ReleaseEmptyBlocks(ctx, allocator.DefaultBlockGrace)
				must(err)
			}
		}
	}

	heads, _, err := lg.Streams(ctx, "", 0)
	must(err)
	var all []*events.Event
	for s := range heads {
		_, err := lg.Read(ctx, s, 1, 0, func(e *events.Event) error { all = append(all, e); return nil })
		must(err)
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].Revision != all[j].Revision {
			return all[i].Revision < all[j].Revision
		}
		if all[i].Stream != all[j].Stream {
			return all[i].Stream < all[j].Stream
		}
		return all[i].Seq < all[j].Seq
	})
	return all
}

// readGoldenLog reads a JSONL log in the events' JSON form.
func readGoldenLog(t *testing.T, path string) []*events.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to generate it)", err)
	}
	defer f.Close()
	var out []*events.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		e := &events.Event{}
		if err := json.Unmarshal(sc.Bytes(), e); err != nil {
			t.Fatalf("%s line %d: %v", path, len(out)+1, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// importLog writes evs into a fresh etcd under the default prefix: one transaction per
// original revision (the events committed at it and the heads they move), so on an etcd
// whose revision is 1 the events get back their original revisions (checked).
func importLog(t *testing.T, cli *clientv3.Client, evs []*events.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys := events.NewKeys("")
	for i := 0; i < len(evs); {
		j := i
		for j < len(evs) && evs[j].Revision == evs[i].Revision {
			j++
		}
		var ops []clientv3.Op
		heads := map[events.Stream]events.Version{}
		var order []events.Stream
		for _, e := range evs[i:j] {
			v, err := events.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			if h := events.HashOf(e.Stream, e.Seq, v); h != e.Hash {
				t.Fatalf("%s #%d re-encodes to another hash", e.Stream, e.Seq)
			}
			ops = append(ops, clientv3.OpPut(keys.Event(e.Stream, e.Seq), string(v)))
			if _, ok := heads[e.Stream]; !ok {
				order = append(order, e.Stream)
			}
			heads[e.Stream] = events.Version{Seq: e.Seq, Hash: e.Hash}
			if _, ok := e.Payload.(*events.Snapshot); ok {
				ops = append(ops, clientv3.OpPut(keys.Snap(e.Stream), string(events.EncodeSnapSeq(e.Seq))))
			}
		}
		for _, s := range order {
			ops = append(ops, clientv3.OpPut(keys.Head(s), string(events.EncodeHead(heads[s]))))
		}
		resp, err := cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		if evs[i].Revision != 0 && resp.Header.Revision != evs[i].Revision {
			t.Fatalf("imported revision %d at etcd revision %d: import into a fresh etcd", evs[i].Revision, resp.Header.Revision)
		}
		i = j
	}
}

func writeGoldenLog(t *testing.T, path string, evs []*events.Event) {
	t.Helper()
	var b bytes.Buffer
	for _, e := range evs {
		j, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// weekEnv is a fresh etcd holding the golden week log; coilctl's clock is Thursday
// 2030-01-10 09:00 (so "2d" means Tuesday 09:00).
func weekEnv(t *testing.T) *env {
	t.Helper()
	path := filepath.Join(logsDir(t), goldenLog)
	if updating() {
		writeGoldenLog(t, path, generateWeek(t))
	}
	evs := readGoldenLog(t, path)
	e := newEnv(t)
	importLog(t, e.cli, evs)
	return e
}

// weekNow is coilctl's clock in the golden tests.
var weekNow = time.Date(2030, 1, 10, 9, 0, 0, 0, time.UTC)

// runAt runs coilctl against e with the clock at now.
func (e *env) runAt(now time.Time, args ...string) result {
	e.t.Helper()
	all := append([]string{"--etcd-endpoints", strings.Join(e.etcd.Endpoints(), ","), "--timeout", "20s"}, args...)
	return runArgsClock(e.t, fixedClock{now}, all...)
}

// TestGoldenWeek runs history, state, diff and events filters on the golden week log and
// compares their exact output (stdout, and the exit code when not 0) with
// testdata/logs/week/NAME.txt.
func TestGoldenWeek(t *testing.T) {
	e := weekEnv(t)
	cases := []struct {
		name string
		args []string
	}{
		{"history-addr", []string{"history", "10.1.2.3"}},
		{"history-addr-busy", []string{"history", "10.1.2.35"}},
		{"history-addr-tuesday-1400", []string{"history", "10.1.2.35", "--at", "2030-01-08T14:00:00Z"}},
		{"history-addr-free-then", []string{"history", "10.1.2.3", "--at", "2030-01-08T14:00:00Z"}},
		{"history-addr-json", []string{"history", "10.1.2.3", "-o", "json"}},
		{"history-dual-v6", []string{"history", "fd00:2::1"}},
		{"history-pod", []string{"history", "--pod", "shop/web-3"}},
		{"history-pod-reclaimed", []string{"history", "--pod", "shop/web-84"}},
		{"history-statefulset-pod", []string{"history", "--pod", "data/db-2", "-o", "yaml"}},
		{"history-container", []string{"history", "--container", "F2"}},
		{"history-never", []string{"history", "10.1.7.7"}},
		{"state-tuesday-1400", []string{"state", "--at", "2030-01-08T14:00:00Z"}},
		{"state-2d-ago", []string{"state", "--at", "2d"}},
		{"state-revision-40", []string{"state", "--revision", "40"}},
		{"state-revision-40-json", []string{"state", "--revision", "40", "-o", "json"}},
		{"state-now", []string{"state", "--at", "0s"}},
		{"diff-monday-tuesday", []string{"diff", "2030-01-07T18:00:00Z", "2030-01-08T14:00:00Z"}},
		{"diff-reclaim", []string{"diff", "2030-01-09T11:00:00Z", "2030-01-09T11:30:00Z"}},
		{"diff-revisions-json", []string{"diff", "30", "60", "-o", "json"}},
		{"diff-same", []string{"diff", "50", "50"}},
		{"events-node-n3-wed", []string{"events", "--node", "n3", "--since", "2030-01-09T00:00:00Z"}},
		{"events-pool-dual-until", []string{"events", "--pool", "dual", "--until", "2030-01-07T14:00:00Z"}},
		{"events-pod", []string{"events", "--pod", "shop/web-3"}},
		{"events-container", []string{"events", "--container", "f22fecf9", "-o", "json"}},
		{"events-revisions-wide", []string{"events", "--since", "20", "--until", "30", "-o", "wide"}},
		{"events-cluster-yaml", []string{"events", "--stream", "cluster", "-o", "yaml"}},
		{"events-released-duration", []string{"events", "--type", "AddressReleased,BlockReleased", "--since", "1d"}},
	}
	dir := filepath.Join(logsDir(t), "week")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.runAt(weekNow, tc.args...)
			got := "$ coilctl " + strings.Join(tc.args, " ") + "\n" + r.stdout
			if r.code != 0 {
				got += fmt.Sprintf("exit %d\n%s", r.code, r.stderr)
			} else if r.stderr != "" {
				t.Errorf("stderr %q", r.stderr)
			}
			path := filepath.Join(dir, tc.name+".txt")
			if updating() {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if got != string(want) {
				t.Errorf("coilctl %s: output differs from %s:\n--- got\n%s\n--- want\n%s", strings.Join(tc.args, " "), path, got, want)
			}
		})
	}
}

// TestGoldenWeekRegenerates checks the generator is deterministic: the log it builds now
// is the committed one, byte for byte.
func TestGoldenWeekRegenerates(t *testing.T) {
	if updating() {
		t.Skip("regenerating")
	}
	path := filepath.Join(logsDir(t), goldenLog)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), goldenLog)
	writeGoldenLog(t, tmp, generateWeek(t))
	got, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the generator no longer builds %s (run with -update if the change is intended)", path)
	}
}

func runArgsClock(t *testing.T, clk events.Clock, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := cli.Main(ctx, args, cli.Env{
		Stdout: &out, Stderr: &errb, Clock: clk,
		Getenv: func(k string) string {
			if k == "USER" {
				return "tester"
			}
			return ""
		},
	})
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// TestGoldenWeekCompacted: once etcd compacted its history, state --revision folds the
// current log up to the revision and prints the same state.
func TestGoldenWeekCompacted(t *testing.T) {
	e := weekEnv(t)
	want, err := os.ReadFile(filepath.Join(logsDir(t), "week", "state-revision-40.txt"))
	if err != nil {
		t.Fatal(err)
	}
	e.compact()
	if got := "$ coilctl state --revision 40\n" + e.ok("state", "--revision", "40"); got != string(want) {
		t.Fatalf("state --revision 40 after compaction:\n%s\nwant\n%s", got, want)
	}
	// A time is folded the same way, compacted or not.
	at := e.ok("state", "--at", "2030-01-07T13:30:00Z")
	if !strings.Contains(at, "(revision 40, last event 2030-01-07T13:30:00Z") {
		t.Fatalf("state --at 13:30 is not revision 40:\n%s", at)
	}
	e.fails(2, []string{"state", "--revision", "100000"}, "revision 100000 is in the future: the log is at revision")
	e.fails(2, []string{"state"}, "give exactly one of --at or --revision")
	e.fails(2, []string{"state", "--at", "1h", "--revision", "3"}, "give exactly one of --at or --revision")
	e.fails(2, []string{"state", "--revision", "2h"}, `--revision "2h": want a positive integer`)
	e.fails(2, []string{"diff", "1"}, "FROM and TO")
	e.fails(2, []string{"diff", "1", "tuesday"}, `TO "tuesday"`)
	e.fails(2, []string{"history"}, "give exactly one of ADDRESS, --container or --pod")
	e.fails(2, []string{"history", "10.1.2.3", "--pod", "a/b"}, "give exactly one of ADDRESS, --container or --pod")
	e.fails(2, []string{"history", "10.1.2"}, `"10.1.2" is not an IP address`)
	e.fails(2, []string{"history", "10.1.2.3", "--at", "40"}, "not a revision")
	e.fails(3, []string{"history", "--pod", "shop/nope"}, "no assignment of pod shop/nope in the log")
}
