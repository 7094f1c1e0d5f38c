// Package soak is Coil's chaos soak (`make soak`, and a 60-second run in `make test`): a
// lab of 3 nodes with BIRD, a 3-member etcd of separate processes, pods churned through
// cnitool and the coil plugin by a few "runtimes" per node, a random fault every few
// seconds (coild, BIRD or an etcd member killed with SIGKILL and started again, an etcd
// member paused with SIGSTOP for longer than coild's request deadline), and an invariant
// checker throughout. See docs/faults.md.
//
// Invariants. Always: no address is held twice, in the log (every node stream, at one
// revision) nor in the kernels (a /32 pod route on two veths); every pod whose ADD
// succeeded has its address in the log, assigned to it on its node, and its veth and
// route in its node's kernel. After each fault, within ConvergeWithin: no veth, pod
// route or assignment in the log without a pod, each node exports exactly its blocks and
// has learnt exactly the others', and every pod reaches every pod on the other nodes.
// The time from the end of the fault (the restart or the resume) until all that holds is
// the fault's convergence time.
//
// What the runtimes do is what kubelet does: a failed ADD is followed by a DEL, and a
// DEL is repeated until it succeeds. Only a killed coild may fail an ADD, on its node (it
// cannot answer): an ADD failing on another node, while BIRD or one etcd member is down
// or paused, or with no fault at all, is a violation. Failed ADDs are reported by the
// fault active then.
package soak

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/demo"
	"github.com/coil-net/coil/netplumb"
)

// Fault kinds.
const (
	FaultCoild     = "coild-kill"
	FaultBird      = "bird-kill"
	FaultEtcdKill  = "etcd-kill"
	FaultEtcdPause = "etcd-pause"
)

// Kinds lists the fault kinds in report order.
var Kinds = []string{FaultCoild, FaultBird, FaultEtcdKill, FaultEtcdPause}

// Config describes a soak. BinDir is required; the rest has defaults.
type Config struct {
	// Duration is how long faults are injected (default 600 s); the final convergence
	// and teardown come after it.
	Duration time.Duration
	// BinDir holds coil, coild, coilctl and etcd (demo.BuildBinaries, demo.BuildEtcd).
	BinDir string
	// Name is the lab name (default random: two soaks can run side by side).
	Name string
	// Nodes (default 3), runtimes per node (default 2), most pods a runtime keeps
	// (default 4).
	Nodes, WorkersPerNode, PodsPerWorker int
	// FaultGap is the longest random wait between a fault's convergence and the next
	// fault (default 4 s; at least 1 s).
	FaultGap time.Duration
	// ConvergeWithin bounds each convergence; past it the fault is a violation
	// (default 120 s).
	ConvergeWithin time.Duration
	// Settle: what a pod deleted less than this ago left (its veth, route, assignment)
	// is not counted as a leak yet: coild finishes a DEL after answering it (default 3 s).
	Settle time.Duration
	// Seed of the random choices (0: from the clock). The report names it.
	Seed uint64
	// Logger receives progress (default: discard).
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.BinDir == "" {
		return errors.New("soak: BinDir is required")
	}
	if c.Duration <= 0 {
		c.Duration = 600 * time.Second
	}
	c.Nodes = cmp.Or(c.Nodes, 3)
	c.WorkersPerNode = cmp.Or(c.WorkersPerNode, 2)
	c.PodsPerWorker = cmp.Or(c.PodsPerWorker, 4)
	if c.FaultGap < time.Second {
		c.FaultGap = 4 * time.Second
	}
	c.ConvergeWithin = cmp.Or(c.ConvergeWithin, 120*time.Second)
	c.Settle = cmp.Or(c.Settle, 3*time.Second)
	c.Seed = cmp.Or(c.Seed, uint64(time.Now().UnixNano()))
	c.Logger = cmp.Or(c.Logger, slog.New(slog.DiscardHandler))
	return nil
}

// Violation is one broken invariant.
type Violation struct {
	At   time.Duration // since the start of the churn
	What string
}

// Report is what a soak measured.
type Report struct {
	Seed        uint64
	Duration    time.Duration              // of the fault phase
	Faults      map[string]int             // injected, by kind
	Convergence map[string][]time.Duration // by kind, in order
	Worst       time.Duration
	WorstFault  string
	PodsAdded   int            // ADDs that succeeded
	AddsFailed  map[string]int // failed ADDs by the fault active then ("none": no fault)
	PodsDeleted int            // DELs that succeeded (pods churned out)
	Checks      int            // invariant checks completed
	PairsPinged int
	Violations  []Violation
}

// Summary is the report in one line (the soak's last line of output).
func (r *Report) Summary() string {
	verdict := "PASS"
	if len(r.Violations) > 0 {
		verdict = "FAIL"
	}
	total, failed := 0, 0
	var kinds []string
	for _, k := range Kinds {
		total += r.Faults[k]
		kinds = append(kinds, fmt.Sprintf("%s %d", k, r.Faults[k]))
	}
	for _, n := range r.AddsFailed {
		failed += n
	}
	return fmt.Sprintf("soak %s: %s, %d faults (%s), %d pods added and %d deleted (%d ADDs failed, %d of them while coild was killed), %d checks, %d pod pairs pinged, worst convergence %s (%s), %d violations, seed %d",
		verdict, r.Duration.Round(time.Second), total, strings.Join(kinds, ", "), r.PodsAdded, r.PodsDeleted, failed, r.AddsFailed[FaultCoild],
		r.Checks, r.PairsPinged, r.Worst.Round(time.Millisecond), r.WorstFault, len(r.Violations), r.Seed)
}

// Table is the convergence times by fault kind (count, median, max), one line each.
func (r *Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-11s %6s %10s %10s %12s\n", "fault", "count", "p50", "max", "failed ADDs")
	for _, k := range Kinds {
		ds := slices.Clone(r.Convergence[k])
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		p50, mx := time.Duration(0), time.Duration(0)
		if len(ds) > 0 {
			p50, mx = ds[len(ds)/2], ds[len(ds)-1]
		}
		fmt.Fprintf(&b, "%-11s %6d %10s %10s %12d\n", k, r.Faults[k], p50.Round(time.Millisecond), mx.Round(time.Millisecond), r.AddsFailed[k])
	}
	fmt.Fprintf(&b, "%-11s %6s %10s %10s %12d\n", "none", "-", "-", "-", r.AddsFailed["none"])
	return b.String()
}

// Run starts the lab, churns and injects faults for cfg.Duration, waits for a last
// convergence and tears the lab down. The error is for a soak that could not run (the
// lab did not start); broken invariants are in Report.Violations.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	c, err := demo.Start(sctx, demo.Config{
		Nodes: cfg.Nodes, Name: cfg.Name, BinDir: cfg.BinDir, DisableIPv6: true, Logger: cfg.Logger,
		Etcd: &lab.EtcdConfig{Binary: filepath.Join(cfg.BinDir, "etcd"), Members: 3},
	})
	if err == nil {
		err = c.CreatePool(sctx, "default", "10.100.0.0/16", 4)
		if err != nil {
			_ = c.Close()
		}
	}
	cancel()
	if err != nil {
		return nil, errors.Wrap(err, "soak: start the lab")
	}
	stopSignal := c.Lab.CloseOnSignal()
	defer func() {
		if err := c.Close(); err != nil {
			cfg.Logger.Error("close the lab", "err", err)
		}
		stopSignal()
	}()
	s := &soak{
		cfg: cfg, c: c, log: cfg.Logger, rnd: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed>>1|1)),
		reg:  registry{pods: map[string]*pod{}},
		rep:  &Report{Seed: cfg.Seed, Faults: map[string]int{}, Convergence: map[string][]time.Duration{}, AddsFailed: map[string]int{}},
		view: &logView{log: c.Log(), heads: map[events.Stream]uint64{}, held: map[string]map[string]demo.Attachment{}},
		seen: map[string]bool{},
	}
	s.fault.Store(new(string))
	s.killedOn.Store(new(string))
	return s.run(ctx), nil
}

type soak struct {
	cfg   Config
	c     *demo.Cluster
	log   *slog.Logger
	rndMu sync.Mutex
	rnd   *rand.Rand
	reg   registry
	view  *logView
	start time.Time
	fault atomic.Pointer[string] // the fault active now ("" when none)
	// killedOn is the node whose coild the active fault killed ("" when none): only its
	// ADDs may fail.
	killedOn atomic.Pointer[string]
	bag      []string // fault kinds still to draw in this round

	mu   sync.Mutex
	rep  *Report
	seen map[string]bool // violations already recorded (by text)
}

func (s *soak) intn(n int) int {
	s.rndMu.Lock()
	defer s.rndMu.Unlock()
	return s.rnd.IntN(n)
}

func (s *soak) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(s.intn(int(hi-lo)/int(time.Millisecond)))*time.Millisecond
}

func (s *soak) violation(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[what] {
		return
	}
	s.seen[what] = true
	at := time.Since(s.start)
	s.rep.Violations = append(s.rep.Violations, Violation{At: at, What: what})
	s.log.Error("VIOLATION", "at", at.Round(time.Millisecond), "what", what)
}

func (s *soak) run(ctx context.Context) *Report {
	s.start = time.Now()
	wctx, stopWorkers := context.WithCancel(ctx)
	var workers sync.WaitGroup
	for _, n := range s.c.Nodes {
		for w := range s.cfg.WorkersPerNode {
			workers.Add(1)
			go func() { defer workers.Done(); s.worker(wctx, n, w) }()
		}
	}
	cctx, stopChecker := context.WithCancel(ctx)
	checkerDone := make(chan struct{})
	go func() { defer close(checkerDone); s.checker(cctx) }()

	end := s.start.Add(s.cfg.Duration)
	for time.Now().Before(end) && ctx.Err() == nil {
		wait(ctx, s.between(time.Second, s.cfg.FaultGap))
		if !time.Now().Before(end) || ctx.Err() != nil {
			break
		}
		kind := s.nextKind()
		s.fault.Store(&kind)
		healed, desc, err := s.inject(ctx, kind)
		s.mu.Lock()
		s.rep.Faults[kind]++
		s.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			s.violation(fmt.Sprintf("%s: %v", desc, err))
		}
		took, ok := s.waitConverged(ctx, healed, desc)
		s.mu.Lock()
		if ok {
			s.rep.Convergence[kind] = append(s.rep.Convergence[kind], took)
			if took > s.rep.Worst {
				s.rep.Worst, s.rep.WorstFault = took, desc
			}
		}
		s.mu.Unlock()
		none := ""
		s.fault.Store(&none)
		s.killedOn.Store(&none)
		s.log.Info("fault over", "fault", desc, "converged", ok, "after", took.Round(time.Millisecond))
	}
	s.rep.Duration = time.Since(s.start)
	// The runtimes stop (their last DELs finish), then everything must converge once more.
	stopWorkers()
	workers.Wait()
	if ctx.Err() == nil {
		s.waitConverged(ctx, time.Now(), "the end of the churn")
	}
	stopChecker()
	<-checkerDone
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rep
}

// nextKind draws the next fault kind: every kind once per round of len(Kinds) faults, in
// random order, so that even a short soak meets each of them.
func (s *soak) nextKind() string {
	if len(s.bag) == 0 {
		s.bag = slices.Clone(Kinds)
		s.rndMu.Lock()
		s.rnd.Shuffle(len(s.bag), func(i, j int) { s.bag[i], s.bag[j] = s.bag[j], s.bag[i] })
		s.rndMu.Unlock()
	}
	k := s.bag[0]
	s.bag = s.bag[1:]
	return k
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// inject runs one fault to its end (the restart or resume) and returns when it ended.
func (s *soak) inject(ctx context.Context, kind string) (time.Time, string, error) {
	rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	switch kind {
	case FaultCoild, FaultBird:
		n := s.c.Nodes[s.intn(len(s.c.Nodes))]
		desc := kind + " on " + n.Name
		down := s.between(0, 2*time.Second)
		s.log.Info("fault", "fault", desc, "down", down)
		kill, start := n.KillCoild, n.StartCoild
		if kind == FaultBird {
			kill, start = n.KillBird, n.StartBird
		} else {
			s.killedOn.Store(&n.Name)
		}
		if err := kill(); err != nil {
			return time.Now(), desc, err
		}
		wait(ctx, down)
		healed := time.Now()
		return healed, desc, start(rctx)
	default:
		e := s.c.Etcd
		i := s.intn(len(e.Members))
		if s.intn(2) == 0 { // the leader half of the time
			if l, err := e.Leader(rctx); err == nil && l >= 0 {
				i = l
			}
		}
		role := "follower"
		if l, err := e.Leader(rctx); err == nil && l == i {
			role = "leader"
		}
		if kind == FaultEtcdKill {
			desc := fmt.Sprintf("%s of m%d (%s)", kind, i, role)
			down := s.between(time.Second, 5*time.Second)
			s.log.Info("fault", "fault", desc, "down", down)
			if err := e.Kill(i); err != nil {
				return time.Now(), desc, err
			}
			wait(ctx, down)
			healed := time.Now()
			return healed, desc, e.Start(rctx, i)
		}
		// Paused for longer than coild's request deadline.
		down := allocator.DefaultAppendTimeout + s.between(time.Second, 3*time.Second)
		desc := fmt.Sprintf("%s of m%d (%s) for %s", kind, i, role, down.Round(time.Millisecond))
		s.log.Info("fault", "fault", desc)
		if err := e.Pause(i); err != nil {
			return time.Now(), desc, err
		}
		wait(ctx, down)
		healed := time.Now()
		return healed, desc, e.Resume(i)
	}
}

// waitConverged waits until a check that started after healed finds every invariant
// holding, and returns how long after healed that was. Not converging within
// ConvergeWithin is a violation.
func (s *soak) waitConverged(ctx context.Context, healed time.Time, desc string) (time.Duration, bool) {
	deadline := healed.Add(s.cfg.ConvergeWithin)
	var last string
	for ctx.Err() == nil {
		if time.Now().After(deadline) {
			s.violation(fmt.Sprintf("not converged within %s after %s: %s", s.cfg.ConvergeWithin, desc, last))
			return 0, false
		}
		started := time.Now()
		liveness, err := s.check(ctx, true)
		switch {
		case err != nil:
			last = err.Error()
		case len(liveness) == 0:
			return started.Sub(healed), true
		default:
			last = strings.Join(liveness, "; ")
		}
		wait(ctx, 200*time.Millisecond)
	}
	return 0, false
}

// checker checks the always-invariants once a second until ctx ends.
func (s *soak) checker(ctx context.Context) {
	for ctx.Err() == nil {
		if _, err := s.check(ctx, false); err != nil && ctx.Err() == nil {
			s.log.Debug("check skipped", "err", err)
		}
		wait(ctx, time.Second)
	}
}

// ---- the runtimes ----

type podState int

const (
	adding podState = iota
	up
	failed   // its ADD failed; the runtime's DEL has not succeeded yet
	deleting // DEL sent, not yet answered with success
	gone     // DEL succeeded and the namespace is removed
)

type pod struct {
	node   *demo.Node
	name   string
	id     string
	veth   string
	pod    *demo.Pod
	addr   netip.Addr
	state  podState
	gen    uint64
	goneAt time.Time
}

type registry struct {
	mu   sync.Mutex
	gen  uint64
	pods map[string]*pod // by container ID
}

func (r *registry) add(n *demo.Node, name string) *pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	id := n.PodContainerID(name)
	p := &pod{node: n, name: name, id: id, veth: netplumb.HostVethName(id, "eth0"), gen: r.gen}
	r.pods[id] = p
	return p
}

func (r *registry) set(p *pod, st podState, dp *demo.Pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	p.state, p.gen = st, r.gen
	if dp != nil {
		p.pod, p.addr = dp, dp.Addr
	}
	if st == gone {
		p.goneAt = time.Now()
	}
}

// snapshot copies the registry, dropping pods gone for longer than settle.
func (r *registry) snapshot(settle time.Duration) map[string]pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]pod, len(r.pods))
	for id, p := range r.pods {
		if p.state == gone && time.Since(p.goneAt) > settle {
			delete(r.pods, id)
			continue
		}
		out[id] = *p
	}
	return out
}

// worker is one runtime on node n: it keeps up to PodsPerWorker pods, adding and
// deleting them at random, until ctx ends; then it finishes its DELs in flight.
func (s *soak) worker(ctx context.Context, n *demo.Node, w int) {
	var mine []*pod
	for seq := 0; ctx.Err() == nil; seq++ {
		if len(mine) < s.cfg.PodsPerWorker && (len(mine) == 0 || s.intn(2) == 0) {
			p := s.reg.add(n, fmt.Sprintf("w%d-%d", w, seq))
			actx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			dp, err := n.TryAddPod(actx, p.name)
			cancel()
			if err == nil {
				s.reg.set(p, up, dp)
				mine = append(mine, p)
				s.mu.Lock()
				s.rep.PodsAdded++
				s.mu.Unlock()
			} else {
				s.addFailed(p, err)
				if dp == nil {
					s.reg.set(p, gone, nil)
				} else {
					s.reg.set(p, failed, nil)
					s.del(n, p)
				}
			}
		} else {
			i := s.intn(len(mine))
			p := mine[i]
			mine = slices.Delete(mine, i, i+1)
			s.reg.set(p, deleting, nil)
			s.del(n, p)
			s.mu.Lock()
			s.rep.PodsDeleted++
			s.mu.Unlock()
		}
		wait(ctx, s.between(0, 100*time.Millisecond))
	}
}

// addFailed counts a failed ADD. Only a killed coild can fail an ADD, on its own node:
// one that fails on another node, while BIRD or an etcd member is down or paused (a
// quorum is left), or with no fault at all, is a violation (coild retries etcd within its
// request deadline).
func (s *soak) addFailed(p *pod, err error) {
	kind := *s.fault.Load()
	if kind == "" {
		kind = "none"
	}
	killedOn := *s.killedOn.Load()
	s.mu.Lock()
	s.rep.AddsFailed[kind]++
	s.mu.Unlock()
	s.log.Info("ADD failed", "pod", p.node.Name+"/"+p.name, "fault", kind, "err", err)
	switch {
	case kind == FaultCoild && p.node.Name == killedOn:
	case kind == FaultCoild:
		s.violation(fmt.Sprintf("ADD of %s/%s failed while the coild of %s was killed: %v", p.node.Name, p.name, killedOn, err))
	case kind == "none":
		s.violation(fmt.Sprintf("ADD of %s/%s failed with no fault active: %v", p.node.Name, p.name, err))
	default:
		s.violation(fmt.Sprintf("ADD of %s/%s failed with %s active: %v", p.node.Name, p.name, kind, err))
	}
}

// del sends the runtime's DEL until it succeeds (as kubelet repeats it), for up to
// ConvergeWithin; giving up is a violation (the runtime cannot free the pod).
func (s *soak) del(n *demo.Node, p *pod) {
	deadline := time.Now().Add(s.cfg.ConvergeWithin)
	backoff := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := n.DelPod(ctx, p.name)
		cancel()
		if err == nil {
			s.reg.set(p, gone, nil)
			return
		}
		if time.Now().After(deadline) {
			s.violation(fmt.Sprintf("DEL of %s/%s failed for %s: %v", n.Name, p.name, s.cfg.ConvergeWithin, err))
			s.reg.set(p, gone, nil)
			return
		}
		wait(context.Background(), backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// ---- the checker ----

// check runs one invariant check. The always-invariants are recorded as violations; the
// returned list says what keeps the cluster from having converged (the leaks, the routes,
// and with ping the pairs of pods that cannot reach each other). An error means the
// state could not be read this time (etcd or a command failed): nothing is concluded.
func (s *soak) check(ctx context.Context, ping bool) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	started := time.Now()
	before := s.reg.snapshot(s.cfg.Settle)
	atts, err := s.view.update(ctx)
	if err != nil {
		return nil, err
	}
	type kernel struct {
		veths  []string
		routes []lab.Route
	}
	kern := map[string]kernel{}
	for _, n := range s.c.Nodes {
		v, verr := n.HostVeths(ctx)
		if verr != nil {
			return nil, verr
		}
		r, rerr := n.PodRoutes(ctx)
		if rerr != nil {
			return nil, rerr
		}
		kern[n.Name] = kernel{v, r}
	}
	after := s.reg.snapshot(s.cfg.Settle)
	took := time.Since(started)
	stableUp := func(id string) (pod, bool) {
		b, ok1 := before[id]
		a, ok2 := after[id]
		return a, ok1 && ok2 && b.state == up && a.state == up && a.gen == b.gen
	}
	knownVeth := map[string]bool{}
	for _, p := range after {
		knownVeth[p.node.Name+"/"+p.veth] = true
	}

	// Always: no address twice in the log (one revision).
	holder := map[netip.Addr]string{}
	for node, byID := range atts {
		for id, a := range byID {
			for _, addr := range a.Addrs {
				if other, dup := holder[addr]; dup {
					s.violation(fmt.Sprintf("address %s held twice in the log: %s and %s/%s", addr, other, node, id))
				}
				holder[addr] = node + "/" + id
			}
		}
	}
	// Always: no /32 on two veths. Across nodes only when the reads were close enough
	// together that an address cannot have moved between them (a block goes back to the
	// pool only after its grace period, 5 min by default).
	routed := map[netip.Prefix]string{}
	for _, n := range s.c.Nodes {
		for _, r := range kern[n.Name].routes {
			if other, dup := routed[r.Dst]; dup && took < 30*time.Second {
				s.violation(fmt.Sprintf("address %s routed to two pods: %s and %s/%s", r.Dst, other, n.Name, r.Dev))
			}
			routed[r.Dst] = n.Name + "/" + r.Dev
		}
	}
	// Always: a pod up during the whole check has its assignment, veth and route.
	var upPods []pod
	for id := range after {
		p, ok := stableUp(id)
		if !ok {
			continue
		}
		upPods = append(upPods, p)
		a, inLog := atts[p.node.Name][id]
		if !inLog || !slices.Contains(a.Addrs, p.addr) {
			s.violation(fmt.Sprintf("pod %s/%s holds %s, the log says %v (in the log: %v)", p.node.Name, p.name, p.addr, a.Addrs, inLog))
		}
		k := kern[p.node.Name]
		if !slices.Contains(k.veths, p.veth) {
			s.violation(fmt.Sprintf("pod %s/%s (%s): its veth %s is gone", p.node.Name, p.name, p.addr, p.veth))
		}
		if !slices.ContainsFunc(k.routes, func(r lab.Route) bool { return r.Dst.Addr() == p.addr && r.Dev == p.veth }) {
			s.violation(fmt.Sprintf("pod %s/%s (%s): no route to it via %s", p.node.Name, p.name, p.addr, p.veth))
		}
	}
	s.mu.Lock()
	s.rep.Checks++
	s.mu.Unlock()

	// Converged: no leftovers without a pod.
	var diffs []string
	for node, byID := range atts {
		for id, a := range byID {
			if _, ok := after[id]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s holds %v for %s, which no pod has", node, a.Addrs, id))
			}
		}
	}
	for _, n := range s.c.Nodes {
		for _, v := range kern[n.Name].veths {
			if !knownVeth[n.Name+"/"+v] {
				diffs = append(diffs, fmt.Sprintf("%s: veth %s without a pod", n.Name, v))
			}
		}
		for _, r := range kern[n.Name].routes {
			if !knownVeth[n.Name+"/"+r.Dev] {
				diffs = append(diffs, fmt.Sprintf("%s: route %s via %s without a pod", n.Name, r.Dst, r.Dev))
			}
		}
	}
	if len(diffs) > 0 {
		return diffs, nil
	}
	ok, diff, err := s.c.Converged(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		return []string{diff}, nil
	}
	if ping {
		if unreachable := s.reachable(ctx, upPods); len(unreachable) > 0 {
			return unreachable, nil
		}
	}
	return nil, nil
}

// reachable pings, from every pod, every pod on the other nodes (one ping each, all at
// once) and returns the pairs that failed among pods still up afterwards.
func (s *soak) reachable(ctx context.Context, pods []pod) []string {
	type pair struct{ from, to pod }
	var mu sync.Mutex
	var failedPairs []pair
	pinged := 0
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, src := range pods {
		var targets []string
		byAddr := map[string]pod{}
		for _, dst := range pods {
			if dst.node != src.node {
				targets = append(targets, dst.addr.String())
				byAddr[dst.addr.String()] = dst
			}
		}
		if len(targets) == 0 {
			continue
		}
		pinged += len(targets)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			script := `for a in "$@"; do (ping -n -q -c 1 -W 2 "$a" >/dev/null 2>&1 || echo "$a") & done; wait`
			out, err := src.pod.Exec(ctx, "sh", append([]string{"-c", script, "sh"}, targets...)...)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				for _, t := range targets {
					failedPairs = append(failedPairs, pair{src, byAddr[t]})
				}
				return
			}
			for _, line := range strings.Fields(string(out)) {
				failedPairs = append(failedPairs, pair{src, byAddr[line]})
			}
		}()
	}
	wg.Wait()
	s.mu.Lock()
	s.rep.PairsPinged += pinged
	s.mu.Unlock()
	now := s.reg.snapshot(s.cfg.Settle)
	stillUp := func(p pod) bool { q, ok := now[p.id]; return ok && q.state == up && q.gen == p.gen }
	var out []string
	for _, fp := range failedPairs {
		if stillUp(fp.from) && stillUp(fp.to) {
			out = append(out, fmt.Sprintf("%s/%s (%s) cannot reach %s/%s (%s)", fp.from.node.Name, fp.from.name, fp.from.addr, fp.to.node.Name, fp.to.name, fp.to.addr))
		}
	}
	return out
}

// logView folds the node streams incrementally: each update reads only the events
// appended since the last one, every stream at one revision.
type logView struct {
	mu    sync.Mutex
	log   *events.EtcdLog
	heads map[events.Stream]uint64
	held  map[string]map[string]demo.Attachment // node -> container ID -> attachment
}

func (v *logView) update(ctx context.Context) (map[string]map[string]demo.Attachment, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	heads, rev, err := v.log.Streams(ctx, "node/", 0)
	if err != nil {
		return nil, err
	}
	for s, h := range heads {
		if h.Seq <= v.heads[s] {
			continue
		}
		_, node, _ := strings.Cut(string(s), "/")
		held := v.held[node]
		if held == nil {
			held = map[string]demo.Attachment{}
			v.held[node] = held
		}
		last := v.heads[s]
		_, err := v.log.Read(ctx, s, last+1, rev, func(e *events.Event) error {
			switch p := e.Payload.(type) {
			case *events.AddressAssigned:
				held[p.ContainerID] = demo.Attachment{Node: node, ContainerID: p.ContainerID, IfName: p.IfName, Addrs: p.Addrs}
			case *events.AddressReleased:
				delete(held, p.ContainerID)
			case *events.NodeRetired:
				clear(held)
			}
			last = e.Seq
			return nil
		})
		v.heads[s] = last // what was applied stays applied
		if err != nil {
			return nil, err
		}
	}
	out := make(map[string]map[string]demo.Attachment, len(v.held))
	for node, held := range v.held {
		out[node] = maps.Clone(held)
	}
	return out, nil
}
