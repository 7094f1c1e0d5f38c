package allocator_test

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/etcdembed"
	"github.com/coil-net/coil/internal/testutil"
)

// cluster is a 3-member etcd in-process: loopback TCP peer URLs, unix-socket client URLs,
// fast raft timings. Members can be killed (closed) and restarted on their data.
type cluster struct {
	t       *testing.T
	cfgs    []etcdembed.Config
	members []*embed.Etcd
	clients []string
}

// startClusterWithPool starts the cluster and creates pool "p" (10.0.0.0/18, blocks of
// 16) through a log on a client of all members, which it returns with its client.
func startClusterWithPool(t *testing.T) (*cluster, *events.EtcdLog, *clientv3.Client) {
	t.Helper()
	c := startCluster(t)
	log, cli := c.logOn()
	admin := &allocator.Admin{Log: log, Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.CreatePool(context.Background(), pool(t, "p", 4, "10.0.0.0/18")); err != nil {
		t.Fatal(err)
	}
	return c, log, cli
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	sock, err := os.MkdirTemp("", "coil3m")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sock) })
	const n = 3
	var peers, names, initial []string
	c := &cluster{t: t, members: make([]*embed.Etcd, n)}
	for i := range n {
		u, err := etcdembed.FreeLoopbackURL()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, fmt.Sprint("m", i))
		peers = append(peers, u)
		c.clients = append(c.clients, "unix://"+filepath.Join(sock, fmt.Sprintf("m%d.sock", i)))
		initial = append(initial, names[i]+"="+u)
	}
	dir := t.TempDir()
	for i := range n {
		c.cfgs = append(c.cfgs, etcdembed.Config{
			Dir: filepath.Join(dir, names[i]), ClientURL: c.clients[i], PeerURL: peers[i], Name: names[i],
			InitialCluster: strings.Join(initial, ","), NoFsync: true, TickMs: 10, ElectionMs: 100, ReadyTimeout: 30 * time.Second,
		})
	}
	t.Cleanup(func() { // registered before any client: runs after they are closed
		for _, m := range c.members {
			if m != nil {
				m.Close()
			}
		}
	})
	c.start(0, 1, 2)
	return c
}

// start starts members (concurrently: a member is ready only once a quorum is).
func (c *cluster) start(idx ...int) {
	c.t.Helper()
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for _, i := range idx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.members[i], errs[i] = etcdembed.Start(c.cfgs[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			c.t.Fatalf("member m%d: %v", i, err)
		}
	}
}

// kill closes a member, as a crashed process would go away (its data stays).
func (c *cluster) kill(i int) {
	c.members[i].Close()
	c.members[i] = nil
}

func (c *cluster) leader() int {
	c.t.Helper()
	for i, m := range c.members {
		if m != nil && m.Server.Leader() == m.Server.MemberID() {
			return i
		}
	}
	c.t.Fatal("no leader")
	return -1
}

// client returns a production client (internal/etcdclient) of the given endpoints,
// closed at cleanup before the members are.
func (c *cluster) client(eps ...string) *clientv3.Client {
	c.t.Helper()
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: eps, DialTimeout: 30 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// logOn returns an event log on a client of all members.
func (c *cluster) logOn() (*events.EtcdLog, *clientv3.Client) {
	cli := c.client(c.clients...)
	log := coilLog(c.t, cli)
	return log, cli
}

// localKeys reads every key under the prefix from member i's own store (serializable,
// with a client pinned to that member's endpoint).
func (c *cluster) localKeys(cli *clientv3.Client) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/coil/", clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out, nil
}

// checkSameEverywhere waits until every member's own store holds the same log as a
// linearizable read through the cluster, and the same stream heads.
func (c *cluster) checkSameEverywhere(log *events.EtcdLog) {
	c.t.Helper()
	ctx := context.Background()
	want, _, err := log.Streams(ctx, "", 0)
	if err != nil {
		c.t.Fatal(err)
	}
	wantKeys, err := c.localKeys(log.Client()) // linearizable enough: after Streams
	if err != nil {
		c.t.Fatal(err)
	}
	for i, ep := range c.clients {
		pinned := c.client(ep)
		plog := events.NewEtcdLog(pinned, events.EtcdConfig{Prefix: "/coil/"})
		var diff string
		testutil.Eventually(c.t, 60*time.Second, func() bool {
			got, err := c.localKeys(pinned)
			if err != nil {
				diff = err.Error()
				return false
			}
			if !maps.Equal(got, wantKeys) {
				diff = fmt.Sprintf("%d keys, want %d", len(got), len(wantKeys))
				return false
			}
			heads, _, err := plog.Streams(ctx, "", 0)
			if err != nil || !maps.Equal(heads, want) {
				diff = fmt.Sprintf("heads %v (%v), want %v", heads, err, want)
				return false
			}
			return true
		}, "member m%d's log differs: %s", i, &diff)
		_ = plog.Close()
	}
}

// allocateRetrying allocates, retrying what a CNI runtime retries (try-again errors:
// events.ErrUnavailable), up to a generous deadline. It returns the address and how many
// try-again errors the caller saw. Any other error fails the test.
func allocateRetrying(t *testing.T, n *allocatortest.Node, id string, seen ...func(error)) (netip.Addr, int, error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tries := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		a, err := n.Allocate(ctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: "p"})
		cancel()
		if err == nil {
			return a.Addrs[0], tries, nil
		}
		for _, f := range seen {
			f(err)
		}
		if !errors.Is(err, events.ErrUnavailable) {
			return netip.Addr{}, tries, errors.Wrapf(err, "allocate %s: not a try-again error", id)
		}
		tries++
		if time.Now().After(deadline) {
			return netip.Addr{}, tries, errors.Wrapf(err, "allocate %s: still failing after 60 s", id)
		}
	}
}

// holders records who got which address and fails on a duplicate.
type holders struct {
	mu   sync.Mutex
	seen map[netip.Addr]string
}

func (h *holders) add(t *testing.T, a netip.Addr, id string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen == nil {
		h.seen = map[netip.Addr]string{}
	}
	if prev, dup := h.seen[a]; dup && prev != id {
		t.Errorf("%s got %s, already held by %s", id, a, prev)
	}
	h.seen[a] = id
}

// runAllocators allocates on each node in a loop until stop is closed, counting
// successes and recording the longest gap between two successes (the write outage seen
// by callers). Errors other than try-again end the loop and are returned by wait.
type runner struct {
	h     holders
	done  atomic.Int64
	tries atomic.Int64
	mu    sync.Mutex
	last  time.Time
	gap   time.Duration
	stop  chan struct{}
	wg    sync.WaitGroup
	errs  chan error
	// lastErr is the last error a caller saw (try-again or not), for failure messages;
	// failed the first error that ended an allocator's loop.
	lastErr atomic.Pointer[string]
	failed  atomic.Pointer[string]
}

func runAllocators(t *testing.T, nodes map[string]*allocatortest.Node) *runner {
	t.Helper()
	r := &runner{stop: make(chan struct{}), errs: make(chan error, len(nodes)), last: time.Now()}
	for name, n := range nodes {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			// Paced (one allocation per pace tick per node): an unpaced loop on a fast
			// cluster would exhaust the pool while a member takes seconds to close.
			pace := time.NewTicker(4 * time.Millisecond)
			defer pace.Stop()
			for i := 0; ; i++ {
				select {
				case <-r.stop:
					return
				case <-pace.C:
				}
				id := fmt.Sprintf("%s-%d", name, i)
				a, tr, err := allocateRetrying(t, n, id, func(err error) {
					msg := time.Now().Format("15:04:05.000 ") + err.Error()
					r.lastErr.Store(&msg)
				})
				r.tries.Add(int64(tr))
				if err != nil {
					msg := fmt.Sprintf("%s at %s: %v", name, time.Now().Format("15:04:05.000"), err)
					r.failed.CompareAndSwap(nil, &msg)
					r.errs <- err
					return
				}
				r.h.add(t, a, id)
				r.mu.Lock()
				r.gap = max(r.gap, time.Since(r.last))
				r.last = time.Now()
				r.mu.Unlock()
				r.done.Add(1)
			}
		}()
	}
	return r
}

// after waits until k more allocations than now have succeeded. An allocator that
// stopped on an error fails the test at once with that error (it once stopped on an
// error nobody saw, and the test failed a minute later saying "fewer than 35
// allocations (last error: none)").
func (r *runner) after(t *testing.T, k int64, msg string) {
	t.Helper()
	want := r.done.Load() + k
	testutil.Eventually(t, 60*time.Second, func() bool {
		if p := r.failed.Load(); p != nil {
			t.Fatalf("%s: an allocator stopped: %s", msg, *p)
		}
		return r.done.Load() >= want
	}, "%s: fewer than %d allocations (last error a caller saw: %s)", msg, want, &lastError{r})
}

// lastError formats as the last error a caller saw, when the message is printed.
type lastError struct{ r *runner }

func (l *lastError) String() string {
	if p := l.r.lastErr.Load(); p != nil {
		return *p
	}
	return "none"
}

func (r *runner) wait(t *testing.T) {
	t.Helper()
	close(r.stop)
	r.wg.Wait()
	close(r.errs)
	for err := range r.errs {
		t.Fatal(err)
	}
}

// killDuring kills member i in the background while allocations run, and returns once
// the kill is over and k more allocations succeeded after it.
func (c *cluster) killDuring(t *testing.T, r *runner, i int, k int64) (closeTook time.Duration) {
	t.Helper()
	r.after(t, 10, "before the kill")
	r.mu.Lock()
	r.gap = 0
	r.mu.Unlock()
	start := time.Now()
	closed := make(chan struct{})
	m := c.members[i]
	c.members[i] = nil
	go func() { m.Close(); close(closed) }()
	r.after(t, k, "while the member closes")
	testutil.Eventually(t, 60*time.Second, func() bool {
		select {
		case <-closed:
			return true
		default:
			return false
		}
	}, "member m%d did not close", i)
	closeTook = time.Since(start)
	r.after(t, k, "after the member closed")
	return closeTook
}

// The log on a 3-member etcd: losing the leader costs an election, then allocations
// resume, all unique, and no caller sees an error: the allocator tries again within the
// request's deadline. (This test was flaky: in about one run in four an append in flight
// on the closing leader, or on a follower that had forwarded it, ended with "request
// timed out, possibly due to previous leader failure" or "server stopped", which the
// log did not classify as a try-again error, so the allocator loop stopped.)
func TestThreeMemberClusterLosesLeader(t *testing.T) {
	c, log, cli := startClusterWithPool(t)
	n := allocatortest.Start(t, cli, log, "n1", allocatortest.Options{Prefix: "/coil/"})
	r := runAllocators(t, map[string]*allocatortest.Node{"n1": n})
	leader := c.leader()
	took := c.killDuring(t, r, leader, 20)
	r.wait(t)
	t.Logf("leader m%d killed: Close took %s; longest pause between allocations %s; %d allocations, %d try-again errors",
		leader, took.Round(time.Millisecond), r.gap.Round(time.Millisecond), r.done.Load(), r.tries.Load())
	if tries := r.tries.Load(); tries != 0 {
		t.Errorf("callers saw %d try-again errors (last: %s); the allocator should have retried within the deadline", tries, (&lastError{r}).String())
	}
	if got := len(n.Attachments()); int64(got) != r.done.Load() || len(r.h.seen) != got {
		t.Fatalf("node holds %d assignments, %d distinct addresses, %d allocations", got, len(r.h.seen), r.done.Load())
	}
	checkInvariants(t, log, nil)
}

// Losing a follower while two allocators (clients of all three members) run: every
// allocation succeeds (callers may see try-again errors, nothing else), addresses stay
// unique; the follower restarted on its data rejoins and holds the same log.
func TestThreeMemberClusterLosesFollower(t *testing.T) {
	c, log, _ := startClusterWithPool(t)
	nodes := map[string]*allocatortest.Node{}
	for _, name := range []string{"n1", "n2"} {
		nlog, ncli := c.logOn()
		nodes[name] = allocatortest.Start(t, ncli, nlog, name, allocatortest.Options{Prefix: "/coil/"})
	}
	r := runAllocators(t, nodes)
	follower := (c.leader() + 1) % 3
	took := c.killDuring(t, r, follower, 20)
	r.wait(t)
	t.Logf("follower m%d killed: Close took %s; longest pause between allocations %s; %d allocations, %d try-again errors",
		follower, took.Round(time.Millisecond), r.gap.Round(time.Millisecond), r.done.Load(), r.tries.Load())
	if got := int64(len(r.h.seen)); got != r.done.Load() {
		t.Fatalf("%d distinct addresses, %d allocations", got, r.done.Load())
	}
	checkInvariants(t, log, nil)

	c.start(follower)
	c.checkSameEverywhere(log)
	// The rejoined member serves writes through the cluster again.
	r = runAllocators(t, nodes)
	r.after(t, 10, "after the rejoin")
	r.wait(t)
	checkInvariants(t, log, nil)
	c.checkSameEverywhere(log)
}

// Losing two of three members: an allocation fails with a try-again error within the
// append deadline instead of hanging, and applies nothing; once the members are back,
// the retry of the same container gets one address (the one committed, if the failed
// append was committed after all), and allocations resume, unique.
func TestThreeMemberClusterLosesQuorum(t *testing.T) {
	c, log, cli := startClusterWithPool(t)
	const appendTimeout = 3 * time.Second
	n := allocatortest.Start(t, cli, log, "n1", allocatortest.Options{Prefix: "/coil/", AppendTimeout: appendTimeout})
	var h holders
	for i := range 5 {
		a, _, err := allocateRetrying(t, n, fmt.Sprint("before-", i))
		if err != nil {
			t.Fatal(err)
		}
		h.add(t, a, fmt.Sprint("before-", i))
	}
	leader := c.leader()
	killed := []int{(leader + 1) % 3, (leader + 2) % 3} // the leader's log gets the entry: it may commit later
	for _, i := range killed {
		c.kill(i)
	}
	actx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	start := time.Now()
	_, err := n.Allocate(actx, allocator.Request{ContainerID: "lost", IfName: "eth0", Pool: "p"})
	took := time.Since(start)
	callerDeadline := actx.Err()
	cancel()
	if err == nil {
		t.Fatal("Allocate without a quorum succeeded")
	}
	t.Logf("Allocate without quorum failed after %s: %v", took.Round(time.Millisecond), err)
	if !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("Allocate without quorum = %v, want events.ErrUnavailable (CNI: try again)", err)
	}
	if callerDeadline != nil {
		t.Fatalf("Allocate without quorum ran into the caller's deadline, not the append's: %v", err)
	}
	if !strings.Contains(err.Error(), "check --etcd-endpoints") {
		t.Fatalf("error %q gives no advice", err)
	}
	if _, ok := n.Lookup("lost", "eth0"); ok {
		t.Fatal("a failed allocation is in the node's state")
	}

	c.start(killed...)
	// The failed append may have been committed once the quorum was back (the leader had
	// it in its log): unknown outcome. Either way the retry must give one address.
	committed := countAssigned(t, log, "n1", "lost")
	a, tries, err := allocateRetrying(t, n, "lost")
	if err != nil {
		t.Fatal(err)
	}
	h.add(t, a, "lost")
	again, _, err := allocateRetrying(t, n, "lost")
	if err != nil || again != a {
		t.Fatalf("idempotent retry of lost: %s, %v; want %s", again, err, a)
	}
	if got := countAssigned(t, log, "n1", "lost"); got != 1 {
		t.Fatalf("lost is assigned %d times in the log, want 1", got)
	}
	t.Logf("after restart: the failed append committed after all: %v; lost got %s (%d try-again errors first)", committed == 1, a, tries)
	for i := range 5 {
		id := fmt.Sprint("after-", i)
		a, _, err := allocateRetrying(t, n, id)
		if err != nil {
			t.Fatal(err)
		}
		h.add(t, a, id)
	}
	checkInvariants(t, log, nil)
	c.checkSameEverywhere(log)
}
