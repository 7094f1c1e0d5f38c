// Command scale simulates clusters of many Coil nodes against a real 3-member etcd on this
// machine and measures how block and address allocation holds up (docs/benchmarks.md,
// "Scale"). Each simulated node is what coild is to etcd, without the kernel: its own etcd
// client, a lease and liveness key (fenced appends), a real allocator.Node (replay,
// registration, group commit) and a watch of the streams the node follows.
//
//	go run ./bench/scale --nodes 1000 --scenario boot
//	go run ./bench/scale --nodes 1000 --scenario churn --churn-pods 100000 --churn-rate 500
//	go run ./bench/scale --nodes 1000 --scenario exhaustion --subnet 10.0.0.0/20
//	go run ./bench/scale --nodes 64 --scenario limit
//	go run ./bench/scale --plot docs/scale.svg --results bench/results/scale.jsonl
//
// The last line of output is one JSON object with the figures (see result); --results
// also appends it to a file, from which --plot draws the SVG in docs/.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/bench/benchenv"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/readside"
)

type options struct {
	nodes        int
	scenario     string
	layout       string
	design       string
	members      int
	fsync        bool
	timings      string
	subnet       string
	blockBits    int
	startPar     int
	noWatch      bool
	watchOrdered bool
	leaseTTL     time.Duration
	retryWait    time.Duration
	timeout      time.Duration
	results      string
	label        string
	churnPods    int
	churnRate    float64
	churnLive    int
	churnRaw     int // churn: transactions of etcd's own baseline after Coil's churn (0: none)
	// churnRawWatch: run the baseline a second time with each writer watching its keys.
	churnRawWatch bool
	reconcile     time.Duration
	blockGrace    time.Duration
	limitDur      time.Duration
	limitReqs     int
	noRawEtcd     bool
	cpuProfile    string
	etcdProfile   string
	// limitRawWatch: measure etcd's own rate a second time with each writer watching its keys.
	limitRawWatch bool
}

func main() {
	var o options
	child := flag.String("etcd-child", "", "(internal) run the etcd members with data in this directory")
	plot := flag.String("plot", "", "write an SVG plot of the results file (--results) to this path and exit")
	flag.IntVar(&o.nodes, "nodes", 100, "simulated nodes")
	flag.StringVar(&o.scenario, "scenario", "boot", "boot, churn, exhaustion or limit")
	flag.StringVar(&o.layout, "layout", "block-streams", "pool layout: block-streams (a stream per block, opt-in in coilctl for now) or pool-stream (one pool stream: coilctl pool create's default, the baseline)")
	flag.StringVar(&o.design, "design", "allocator", "block taking: allocator (allocator.Node as built), or a prototype: proto-blocks, proto-shards, proto-combine")
	flag.IntVar(&o.members, "members", 3, "etcd members")
	flag.BoolVar(&o.fsync, "fsync", true, "etcd fsyncs its WAL (as in production)")
	flag.StringVar(&o.timings, "etcd-timings", "default", "raft timings: default (100 ms tick, 1 s election) or fast (10/100)")
	flag.StringVar(&o.subnet, "subnet", "10.0.0.0/8", "the pool's subnet")
	flag.IntVar(&o.blockBits, "block-bits", 5, "block size in bits")
	flag.IntVar(&o.startPar, "start-parallel", 32, "nodes started at once during set-up")
	flag.BoolVar(&o.noWatch, "no-watch", false, "nodes do not watch the log")
	flag.BoolVar(&o.watchOrdered, "watch-ordered", false, "nodes' watches keep the order across streams (coild's watch before PerStreamOrder: the baseline of that change)")
	flag.DurationVar(&o.leaseTTL, "lease-ttl", 60*time.Second, "the nodes' lease TTL")
	flag.DurationVar(&clientKeepAlive, "client-keepalive", 0, "the nodes' gRPC keep-alive ping interval (0: coild's client, 5 s)")
	flag.DurationVar(&clientKeepAliveTimeout, "client-keepalive-timeout", 20*time.Second, "with --client-keepalive: how long a ping may go unanswered")
	flag.DurationVar(&o.retryWait, "retry-wait", time.Second, "boot, churn: wait this long before retrying a failed Allocate (a runtime retries a failed pod later)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up on the scenario after this long")
	flag.StringVar(&o.results, "results", "", "append the result's JSON line to this file")
	flag.StringVar(&o.label, "label", "", "a label recorded with the result (e.g. baseline, new)")
	flag.IntVar(&o.churnPods, "churn-pods", 100000, "churn: pods started (and stopped)")
	flag.Float64Var(&o.churnRate, "churn-rate", 500, "churn: pod starts per second (stops follow at the same rate)")
	flag.IntVar(&o.churnRaw, "churn-raw", 0, "churn: after Coil's churn, this many of etcd's own transactions at 2 x --churn-rate (the latency baseline)")
	flag.BoolVar(&o.churnRawWatch, "churn-raw-watch", false, "churn: with --churn-raw, run the baseline a second time with each writer watching its own keys (as a node watches its own stream)")
	flag.IntVar(&o.churnLive, "churn-live", 20, "churn: pods alive per node in the steady state")
	flag.DurationVar(&o.reconcile, "reconcile-every", 0, "churn: each node releases empty blocks this often (0: never)")
	flag.DurationVar(&o.blockGrace, "block-grace", 10*time.Second, "churn: how long a block stays empty before it is released")
	flag.DurationVar(&o.limitDur, "limit-duration", 20*time.Second, "limit: how long each side runs")
	flag.IntVar(&o.limitReqs, "limit-requesters", 64, "limit: concurrent requesters per node")
	flag.BoolVar(&o.noRawEtcd, "limit-no-raw", false, "limit: skip etcd's own put rate")
	flag.BoolVar(&o.limitRawWatch, "limit-raw-watch", false, "limit: also measure etcd's own rate with each writer watching its own keys (as a node watches its own stream)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "limit, churn: write a CPU profile of the harness (the nodes' side) during Coil's run to this file")
	flag.StringVar(&o.etcdProfile, "etcd-cpuprofile", "", "write a CPU profile of the etcd members (from ready to stop: set-up, scenario and baselines) to this file")
	flag.Parse()
	if *child != "" {
		if err := etcdChild(*child, o.members, o.fsync, o.timings, o.etcdProfile); err != nil {
			fmt.Fprintf(os.Stderr, "etcd child: %+v\n", err)
			os.Exit(1)
		}
		return
	}
	if *plot != "" {
		if err := writePlot(*plot, o.results); err != nil {
			fmt.Fprintf(os.Stderr, "bench/scale: %v\n", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A run that outlives its timeout by far is stuck somewhere: keep the goroutines' stacks.
	watchdog := time.AfterFunc(o.timeout+15*time.Minute, func() {
		path := fmt.Sprintf("%s/coil-scale-stuck-%d.txt", os.TempDir(), os.Getpid())
		if f, err := os.Create(path); err == nil {
			_ = pprof.Lookup("goroutine").WriteTo(f, 2)
			_ = f.Close()
			fmt.Fprintln(os.Stderr, "bench/scale: still running long after --timeout; goroutines written to", path)
		}
	})
	defer watchdog.Stop()
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/scale: %+v\n", err)
		os.Exit(1)
	}
	if res.Duplicates > 0 || res.Error != "" {
		os.Exit(2)
	}
}

// emit prints the result (table, then the JSON line last) and appends it to the results
// file. run calls it as soon as the figures are in, before the nodes are stopped: a stop
// that hangs on a starved machine must not lose the measurement.
func emit(o options, res *result) {
	printTable(res)
	line, _ := json.Marshal(res)
	if o.results != "" {
		f, err := os.OpenFile(o.results, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, _ = f.Write(append(line, '\n'))
			_ = f.Close()
		}
	}
	fmt.Println(string(line))
}

// result is the JSON line the harness prints last.
type result struct {
	Nodes        int     `json:"nodes"`
	Scenario     string  `json:"scenario"`
	Label        string  `json:"label,omitempty"`
	Layout       string  `json:"layout"`
	Design       string  `json:"design"`
	AllBlockedS  float64 `json:"all_blocked_s"`
	TxnsPerBlock float64 `json:"txns_per_block"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	Maxms        float64 `json:"max_ms"`
	Duplicates   int     `json:"duplicates"`

	Allocs         int            `json:"allocs"`
	FailedAllocs   int            `json:"failed_allocs"`
	FailedReasons  map[string]int `json:"failed_reasons,omitempty"`
	BlockAttempts  int64          `json:"block_attempts"`
	BlocksTaken    int64          `json:"blocks_taken"`
	Appends        int64          `json:"appends"`
	Conflicts      int64          `json:"conflicts"`
	Reads          int64          `json:"reads"`
	WatchPerNode   float64        `json:"watch_events_per_node"`
	DBBytes        int64          `json:"etcd_db_bytes"`
	DBInUseBytes   int64          `json:"etcd_db_in_use_bytes"`
	EtcdCPUs       float64        `json:"etcd_cpu_s"`
	EtcdRSSMiB     float64        `json:"etcd_rss_mib"`
	HarnessCPUs    float64        `json:"harness_cpu_s"`
	HeapKiBNode    float64        `json:"client_heap_kib_per_node"`
	RSSKiBNode     float64        `json:"client_rss_kib_per_node"`
	GoroutinesNode float64        `json:"goroutines_per_node"`
	SetupS         float64        `json:"setup_s"`
	SetupRetries   int64          `json:"setup_retries,omitempty"`
	ScenarioS      float64        `json:"scenario_s"`

	LogEvents  int `json:"log_events"`
	LogStreams int `json:"log_streams"`
	LogBlocks  int `json:"log_blocks_owned"`
	LogAddrs   int `json:"log_addresses_held"`

	// churn
	ChurnRate    float64 `json:"churn_rate,omitempty"`
	ReleaseP50ms float64 `json:"release_p50_ms,omitempty"`
	ReleaseP99ms float64 `json:"release_p99_ms,omitempty"`
	// AppendP50ms, AppendP99ms (churn): the appends' own etcd round trips (a request's
	// latency is this plus its wait in the node's queue for the append before it).
	AppendP50ms float64 `json:"append_p50_ms,omitempty"`
	AppendP99ms float64 `json:"append_p99_ms,omitempty"`
	// etcd's own transaction latency at churn's append rate (--churn-raw).
	ChurnRawP50ms  float64 `json:"churn_raw_p50_ms,omitempty"`
	ChurnRawP99ms  float64 `json:"churn_raw_p99_ms,omitempty"`
	ChurnRawMaxms  float64 `json:"churn_raw_max_ms,omitempty"`
	ChurnRawFailed int     `json:"churn_raw_failed,omitempty"`
	// The same with each writer watching its keys (--churn-raw-watch).
	ChurnRawWatchP50ms  float64 `json:"churn_raw_watch_p50_ms,omitempty"`
	ChurnRawWatchP99ms  float64 `json:"churn_raw_watch_p99_ms,omitempty"`
	ChurnRawWatchMaxms  float64 `json:"churn_raw_watch_max_ms,omitempty"`
	ChurnRawWatchFailed int     `json:"churn_raw_watch_failed,omitempty"`
	ReplayS             float64 `json:"replay_s,omitempty"`
	ReplayEvents        int64   `json:"replay_events,omitempty"`
	NewNodeLoadMs       float64 `json:"new_node_load_ms,omitempty"`
	BlocksReleased      int64   `json:"blocks_released,omitempty"`
	// exhaustion
	ExhaustedNodes int `json:"exhausted_nodes,omitempty"`
	PoolAddresses  int `json:"pool_addresses,omitempty"`
	// limit
	CoilAllocsPerS float64 `json:"coil_allocs_per_s,omitempty"`
	EtcdPutsPerS   float64 `json:"etcd_puts_per_s,omitempty"`
	LimitFraction  float64 `json:"limit_fraction,omitempty"`
	// EtcdPutsWatchedPerS: etcd's own rate with each writer watching its keys (--limit-raw-watch).
	EtcdPutsWatchedPerS float64 `json:"etcd_puts_watched_per_s,omitempty"`
	// CPU cores used during each side of the limit scenario (CPU seconds per second):
	// by the etcd members' process and by the harness (the nodes, or the raw writers).
	LimitCoilEtcdCPU   float64 `json:"limit_coil_etcd_cpu,omitempty"`
	LimitCoilClientCPU float64 `json:"limit_coil_client_cpu,omitempty"`
	LimitRawEtcdCPU    float64 `json:"limit_raw_etcd_cpu,omitempty"`
	LimitRawClientCPU  float64 `json:"limit_raw_client_cpu,omitempty"`
	MeanBatch          float64 `json:"mean_batch,omitempty"`
	MeanValueBytes     float64 `json:"mean_value_bytes,omitempty"`

	Date    string `json:"date"`
	Machine string `json:"machine"`
	Commit  string `json:"commit"`
	Load    string `json:"loadavg"`
	Error   string `json:"error,omitempty"`
}

// harness holds what every scenario uses.
type harness struct {
	o     options
	etcd  *etcdCluster
	admin *clientv3.Client
	log   *events.EtcdLog
	c     *counters
	nodes []*simNode
	pool  string
	res   *result
	// blocksBefore: BlockAssigned events in the log when the scenario started.
	blocksBefore int64
	setupRetries atomic.Int64
}

func run(ctx context.Context, o options) (*result, error) {
	raiseFileLimit()
	res := &result{Nodes: o.nodes, Scenario: o.scenario, Label: o.label, Layout: o.layout, Design: o.design,
		Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Commit: benchenv.Commit(), Load: benchenv.LoadAvg()}
	switch o.scenario {
	case "boot", "churn", "exhaustion", "limit":
	default:
		return nil, errors.Newf("--scenario %q: want boot, churn, exhaustion or limit", o.scenario)
	}
	ec, err := startEtcd(ctx, o.members, o.fsync, o.timings, o.etcdProfile)
	if err != nil {
		return nil, err
	}
	defer ec.stop()
	h := &harness{o: o, etcd: ec, c: &counters{}, pool: "scale", res: res}
	h.admin, err = etcdclient.New(etcdclient.Config{Endpoints: ec.endpoints, DialTimeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	defer h.admin.Close()
	h.log = events.NewEtcdLog(h.admin, events.EtcdConfig{})
	defer h.log.Close()
	if err := h.createPool(ctx); err != nil {
		return nil, err
	}
	if strings.HasPrefix(o.design, "proto-") {
		return h.runProto(ctx)
	}
	heap0, rss0, gr0 := memNow()
	t0 := time.Now()
	if err := h.startNodes(ctx, o.nodes); err != nil {
		return nil, err
	}
	defer h.stopNodes()
	res.SetupS = time.Since(t0).Seconds()
	res.SetupRetries = h.setupRetries.Load()
	heap1, rss1, gr1 := memNow()
	res.HeapKiBNode = (heap1 - heap0) / 1024 / float64(o.nodes)
	res.RSSKiBNode = (rss1 - rss0) / 1024 / float64(o.nodes)
	res.GoroutinesNode = float64(gr1-gr0) / float64(o.nodes)
	*h.c = counters{} // count the scenario only (set-up registered and replayed)
	if chk, err := checkLog(ctx, h.log); err == nil {
		h.blocksBefore = int64(chk.Assigned)
	}
	etcdCPU0, cpu0 := ec.cpuSeconds(), procCPU(os.Getpid())
	sctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	t1 := time.Now()
	switch o.scenario {
	case "boot":
		err = h.boot(sctx)
	case "churn":
		err = h.churn(sctx)
	case "exhaustion":
		err = h.exhaustion(sctx)
	case "limit":
		err = h.limit(sctx)
	}
	res.ScenarioS = time.Since(t1).Seconds()
	if err != nil {
		res.Error = err.Error()
	}
	res.EtcdCPUs = ec.cpuSeconds() - etcdCPU0
	res.HarnessCPUs = procCPU(os.Getpid()) - cpu0
	res.EtcdRSSMiB = ec.rssMiB()
	for _, n := range h.nodes {
		if err := n.watchErr(); err != nil && res.Error == "" {
			res.Error = fmt.Sprintf("node %s: watch: %v", n.name, err)
		}
	}
	h.fillCounters()
	if o.scenario == "churn" {
		if err := h.replay(ctx); err != nil && res.Error == "" {
			res.Error = err.Error()
		}
	}
	if err := h.finish(ctx, res); err != nil {
		return nil, err
	}
	return res, nil
}

// blocksFromLog counts the blocks taken during the scenario from the log (a take whose
// reply was lost still took its block): transactions per block = attempts / that.
func (h *harness) blocksFromLog(assigned int) {
	if taken := int64(assigned) - h.blocksBefore; taken > 0 {
		h.res.BlocksTaken = taken
		h.res.TxnsPerBlock = float64(h.res.BlockAttempts) / float64(taken)
	}
}

func (h *harness) fillCounters() {
	c, res := h.c, h.res
	res.BlockAttempts, res.BlocksTaken = c.blockAttempts.Load(), c.blocksTaken.Load()
	res.Appends, res.Conflicts, res.Reads = c.appends.Load(), c.conflicts.Load(), c.reads.Load()
	if res.BlocksTaken > 0 {
		res.TxnsPerBlock = float64(res.BlockAttempts) / float64(res.BlocksTaken)
	}
	if len(h.nodes) > 0 {
		res.WatchPerNode = float64(c.watchEvents.Load()) / float64(len(h.nodes))
	}
}

// createPool creates the pool the nodes allocate from, in the layout asked for.
func (h *harness) createPool(ctx context.Context) error {
	sn, err := allocator.ParseSubnet(h.o.subnet)
	if err != nil {
		return err
	}
	admin := &allocator.Admin{Log: h.log, Clock: events.SystemClock{}, Actor: "bench"}
	p := &events.PoolCreated{Name: h.pool, BlockSizeBits: uint8(h.o.blockBits), Subnets: []events.Subnet{sn}}
	return createPoolLayout(ctx, admin, p, h.o.layout)
}

func nodeName(i int) string { return fmt.Sprintf("node-%05d", i) }

// startNodes starts n simulated nodes, startPar at a time.
func (h *harness) startNodes(ctx context.Context, n int) error {
	cfg := simConfig{endpoints: h.etcd.endpoints, leaseTTL: h.o.leaseTTL, c: h.c, noWatch: h.o.noWatch, watchOrdered: h.o.watchOrdered}
	h.nodes = make([]*simNode, n)
	sem := make(chan struct{}, h.o.startPar)
	var wg sync.WaitGroup
	var first atomic.Value
	var started atomic.Int64
	for i := range n {
		sem <- struct{}{}
		if first.Load() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// A start that fails on a busy etcd is tried again, as coild starts a new
			// session; five failures in a row end the run.
			var nd *simNode
			var err error
			for try := range 5 {
				if nd, err = startNode(ctx, cfg, nodeName(i)); err == nil || ctx.Err() != nil {
					break
				}
				h.setupRetries.Add(1)
				sleepCtx(ctx, time.Duration(try+1)*time.Second)
			}
			if err != nil {
				first.CompareAndSwap(nil, err)
				return
			}
			h.nodes[i] = nd
			if k := started.Add(1); k%1000 == 0 {
				fmt.Fprintf(os.Stderr, "%d nodes started\n", k)
			}
		}()
	}
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}

// stopNodes stops the nodes, giving up after a minute (a node's goroutines may wait on
// an etcd client that is reconnecting; the process exits anyway).
func (h *harness) stopNodes() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, n := range h.nodes {
		if n == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); defer func() { <-sem }(); n.stop() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		fmt.Fprintln(os.Stderr, "bench/scale: some nodes did not stop within a minute; exiting anyway")
	}
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) { l.mu.Lock(); l.d = append(l.d, d); l.mu.Unlock() }

// quantiles returns p50, p99 and max in milliseconds.
func (l *latencies) quantiles() (p50, p99, mx float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	q := func(f float64) float64 {
		i := int(f * float64(len(s)-1))
		return float64(s[i]) / 1e6
	}
	return q(0.50), q(0.99), float64(s[len(s)-1]) / 1e6
}

// failures counts failed calls by reason.
type failures struct {
	mu sync.Mutex
	n  int
	by map[string]int
}

func (f *failures) add(err error) {
	reason := "other"
	switch {
	case errors.Is(err, allocator.ErrExhausted):
		reason = "exhausted"
	case errors.Is(err, allocator.ErrRetries):
		reason = "retries"
	case errors.Is(err, events.ErrConflict):
		reason = "conflict"
	case errors.Is(err, events.ErrFenced):
		reason = "fenced"
	case errors.Is(err, events.ErrUnavailable):
		reason = "unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		reason = "deadline"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.by == nil {
		f.by = map[string]int{}
	}
	if f.by[reason] == 0 {
		fmt.Fprintf(os.Stderr, "first %s failure: %v\n", reason, err)
	}
	f.by[reason]++
}

func containerID(node, k int) string { return fmt.Sprintf("%016x%016x%032x", node, k, rand.Uint64()) }

// finish checks the log (res's log figures and duplicates, the blocks each node owns),
// reads the size of etcd's database into res and emits res.
func (h *harness) finish(ctx context.Context, res *result) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	chk, err := checkLog(cctx, h.log)
	if err != nil {
		return errors.Wrap(err, "check the log")
	}
	res.Duplicates = chk.duplicates()
	res.LogEvents, res.LogStreams, res.LogBlocks, res.LogAddrs = chk.Events, chk.Streams, chk.Blocks, chk.Addresses
	h.blocksFromLog(chk.Assigned)
	for _, p := range chk.FirstProblems {
		fmt.Fprintln(os.Stderr, "log check:", p)
	}
	res.DBBytes, res.DBInUseBytes = dbSize(ctx, h.admin, h.etcd.endpoints)
	emit(h.o, res)
	return nil
}

// boot: every node allocates its first address at one instant (so each takes its first
// block at once); failed calls are retried at once, as a runtime would retry the pod.
func (h *harness) boot(ctx context.Context) error {
	r := bootAll(ctx, len(h.nodes), h.o.retryWait, func(ctx context.Context, i int) error {
		req := allocator.Request{ContainerID: containerID(i, 0), IfName: "eth0", Pool: h.pool, PodNamespace: "default", PodName: fmt.Sprintf("pod-%d-0", i)}
		_, err := h.nodes[i].allocate(ctx, req)
		return err
	})
	r.fill(h.res)
	if len(r.lat.d) < len(h.nodes) {
		return errors.Newf("only %d of %d nodes got an address before the timeout", len(r.lat.d), len(h.nodes))
	}
	return nil
}

// bootRun is what bootAll measured.
type bootRun struct {
	lat     latencies
	fails   failures
	took    time.Duration // from the start until every node is done
	blocked time.Duration // the latest first success, after the start
}

// bootAll has each of n nodes call try(i) at one instant and call it again at once
// (after retryWait) when it fails, as a runtime would retry the pod, until it succeeds
// or ctx ends.
func bootAll(ctx context.Context, n int, retryWait time.Duration, try func(ctx context.Context, i int) error) *bootRun {
	r := &bootRun{}
	var blocked atomic.Int64 // latest success, ns after the start
	r.took = testutil.Burst(n, func(i int) {
		t0 := time.Now()
		for ctx.Err() == nil {
			if err := try(ctx, i); err != nil {
				if ctx.Err() == nil {
					r.fails.add(err)
					sleepCtx(ctx, retryWait)
				}
				continue
			}
			d := time.Since(t0)
			r.lat.add(d)
			for {
				cur := blocked.Load()
				if int64(d) <= cur || blocked.CompareAndSwap(cur, int64(d)) {
					break
				}
			}
			return
		}
	})
	r.blocked = time.Duration(blocked.Load())
	return r
}

// fill sets the boot figures of res.
func (r *bootRun) fill(res *result) {
	res.ScenarioS = r.took.Seconds()
	res.AllBlockedS = r.blocked.Seconds()
	res.P50ms, res.P99ms, res.Maxms = r.lat.quantiles()
	res.Allocs = len(r.lat.d)
	res.FailedAllocs, res.FailedReasons = r.fails.n, r.fails.by
}

// exhaustion: every node allocates addresses one after another until the pool is
// exhausted; every node must end on ErrExhausted and nothing else may fail.
func (h *harness) exhaustion(ctx context.Context) error {
	var lat latencies
	var fails failures
	var exhausted atomic.Int64
	wall := testutil.Burst(len(h.nodes), func(i int) {
		n := h.nodes[i]
		for k := 0; ctx.Err() == nil; k++ {
			req := allocator.Request{ContainerID: containerID(i, k), IfName: "eth0", Pool: h.pool}
			t0 := time.Now()
			_, err := n.allocate(ctx, req)
			if err == nil {
				lat.add(time.Since(t0))
				continue
			}
			if errors.Is(err, allocator.ErrExhausted) {
				exhausted.Add(1)
				return
			}
			if ctx.Err() == nil {
				fails.add(err)
			}
			k-- // retry the same pod
		}
	})
	h.res.AllBlockedS = wall.Seconds()
	h.res.P50ms, h.res.P99ms, h.res.Maxms = lat.quantiles()
	h.res.Allocs = len(lat.d)
	h.res.FailedAllocs, h.res.FailedReasons = fails.n, fails.by
	h.res.ExhaustedNodes = int(exhausted.Load())
	sn, _ := allocator.ParseSubnet(h.o.subnet)
	h.res.PoolAddresses = 1 << (sn.IPv4.Addr().BitLen() - sn.IPv4.Bits())
	if int(exhausted.Load()) != len(h.nodes) {
		return errors.Newf("%d of %d nodes saw \"pool exhausted\"", exhausted.Load(), len(h.nodes))
	}
	if len(lat.d) != h.res.PoolAddresses {
		return errors.Newf("%d addresses handed out, the pool holds %d", len(lat.d), h.res.PoolAddresses)
	}
	return nil
}

// churn: pods start on random nodes at churnRate per second and each stops after a
// lifetime that keeps churnLive pods per node alive in the steady state (open loop: the
// schedule does not wait for slow calls).
func (h *harness) churn(ctx context.Context) error {
	o := h.o
	var alloc, rel latencies
	var fails failures
	life := time.Duration(float64(o.churnLive*len(h.nodes)) / o.churnRate * float64(time.Second))
	h.res.ChurnRate = o.churnRate
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	var reconWG sync.WaitGroup
	rctx, rcancel := context.WithCancel(ctx)
	var released atomic.Int64
	if o.reconcile > 0 {
		for _, n := range h.nodes {
			reconWG.Add(1)
			go func() {
				defer reconWG.Done()
				period := o.reconcile + time.Duration(rand.Int64N(int64(o.reconcile)))
				for {
					sleepCtx(rctx, period)
					if rctx.Err() != nil {
						return
					}
					k, _ := n.node.ReleaseEmptyBlocks(rctx, o.blockGrace)
					released.Add(int64(k))
				}
			}()
		}
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	interval := time.Duration(float64(time.Second) / o.churnRate)
	for i := 0; i < o.churnPods && ctx.Err() == nil; i++ {
		at := t0.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		ni := rand.IntN(len(h.nodes))
		n := h.nodes[ni]
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := allocator.Request{ContainerID: containerID(ni, i), IfName: "eth0", Pool: h.pool, PodNamespace: "churn", PodName: fmt.Sprintf("pod-%d", i)}
			for {
				s := time.Now()
				_, err := n.allocate(ctx, req)
				if err == nil {
					alloc.add(time.Since(s))
					break
				}
				if ctx.Err() != nil {
					return
				}
				fails.add(err)
				sleepCtx(ctx, o.retryWait)
			}
			select {
			case <-time.After(time.Until(at.Add(life))):
			case <-ctx.Done():
				return
			}
			s := time.Now()
			if _, err := n.node.Release(ctx, req.ContainerID, req.IfName, "pod deleted"); err != nil {
				if ctx.Err() == nil {
					fails.add(err)
				}
				return
			}
			rel.add(time.Since(s))
		}()
		if (i+1)%10000 == 0 {
			p50, p99, mx := alloc.quantiles()
			fmt.Fprintf(os.Stderr, "churn: %d pods started in %.1fs (behind schedule %.1fs), alloc p50 %.1f p99 %.1f max %.1f ms\n",
				i+1, time.Since(t0).Seconds(), -time.Until(at).Seconds(), p50, p99, mx)
		}
	}
	wg.Wait()
	stopProfile()
	rcancel()
	reconWG.Wait()
	h.res.AllBlockedS = time.Since(t0).Seconds()
	h.res.P50ms, h.res.P99ms, h.res.Maxms = alloc.quantiles()
	h.res.ReleaseP50ms, h.res.ReleaseP99ms, _ = rel.quantiles()
	h.res.AppendP50ms, h.res.AppendP99ms, _ = h.c.appendLat.quantiles()
	h.res.Allocs = len(alloc.d)
	h.res.FailedAllocs, h.res.FailedReasons = fails.n, fails.by
	h.res.BlocksReleased = released.Load()
	if ctx.Err() == nil && o.churnRaw > 0 {
		p50, p99, mx, failed := h.churnRaw(ctx, false)
		h.res.ChurnRawP50ms, h.res.ChurnRawP99ms, h.res.ChurnRawMaxms, h.res.ChurnRawFailed = p50, p99, mx, failed
		if ctx.Err() == nil && o.churnRawWatch {
			p50, p99, mx, failed := h.churnRaw(ctx, true)
			h.res.ChurnRawWatchP50ms, h.res.ChurnRawWatchP99ms, h.res.ChurnRawWatchMaxms, h.res.ChurnRawWatchFailed = p50, p99, mx, failed
		}
	}
	return ctx.Err()
}

// churnRaw is churn's baseline: etcd's own transaction latency at the rate Coil's churn
// appended (a start and a stop per pod: 2 x --churn-rate), on the same members through
// the same nodes' clients, each op a transaction of an append's shape on a random node:
// compare the node's lease and its head, put one event-sized value and the new head.
// A node's ops go one at a time, as its committer's appends do. With watch, each node
// also watches its own keys (and drains the watch). It returns p50, p99, max (ms) and the
// failed transactions.
func (h *harness) churnRaw(ctx context.Context, watch bool) (p50, p99, mx float64, failed int) {
	o := h.o
	var lat latencies
	var fails failures
	val := make([]byte, 101)
	type rawNode struct {
		mu   sync.Mutex
		seq  int
		prev string
	}
	raws := make([]rawNode, len(h.nodes))
	interval := time.Duration(float64(time.Second) / (2 * o.churnRate))
	tag := "rawchurn"
	if watch {
		tag = "rawchurn-watched"
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for ni, n := range h.nodes {
			wch := n.cli.Watch(wctx, fmt.Sprintf("/%s/log/%d/", tag, ni), clientv3.WithPrefix())
			go func() {
				for range wch { //nolint:revive // drained: etcd sends every put as a node's watch gets its own events
				}
			}()
		}
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < o.churnRaw && ctx.Err() == nil; i++ {
		if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		ni := rand.IntN(len(h.nodes))
		n, r := h.nodes[ni], &raws[ni]
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := time.Now()
			r.mu.Lock()
			defer r.mu.Unlock()
			hk := fmt.Sprintf("/%s/head/%d", tag, ni)
			r.seq++
			next := fmt.Sprintf("%012d", r.seq)
			resp, err := rawAppend(ctx, n.cli, events.NewKeys("").Alive(n.name), n.lease, hk, r.prev, next,
				[]clientv3.Op{clientv3.OpPut(fmt.Sprintf("/%s/log/%d/%012d", tag, ni, r.seq), string(val))})
			switch {
			case err != nil:
				fails.add(err)
			case !resp.Succeeded:
				fails.add(errors.Newf("raw churn on node %d: compare failed", ni))
			default:
				r.prev = next
				lat.add(time.Since(s))
			}
		}()
	}
	wg.Wait()
	p50, p99, mx = lat.quantiles()
	fmt.Fprintf(os.Stderr, "churn: etcd's own transactions at %.0f/s (watched %v): p50 %.1f p99 %.1f max %.1f ms, %d failed\n",
		2*o.churnRate, watch, p50, p99, mx, fails.n)
	return p50, p99, mx, fails.n
}

// replay measures, after churn, a full replay of the log (every stream, as coilctl state
// does) and the load of a node that never ran (what a new coild reads before it is ready).
func (h *harness) replay(ctx context.Context) error {
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: h.etcd.endpoints, DialTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	log := events.NewEtcdLog(cli, events.EtcdConfig{})
	defer log.Close()
	heads, rev, err := log.Streams(ctx, "", 0)
	if err != nil {
		return err
	}
	var streams []events.Stream
	for s, v := range heads {
		streams = append(streams, s)
		h.res.ReplayEvents += int64(v.Seq)
	}
	t0 := time.Now()
	if _, err := readside.Replay(ctx, log, streams, rev, nil); err != nil {
		return errors.Wrap(err, "replay")
	}
	h.res.ReplayS = time.Since(t0).Seconds()
	c := &counters{}
	t1 := time.Now()
	n, err := startNode(ctx, simConfig{endpoints: h.etcd.endpoints, leaseTTL: h.o.leaseTTL, c: c, noWatch: true}, "node-new")
	if err != nil {
		return err
	}
	h.res.NewNodeLoadMs = float64(time.Since(t1)) / 1e6
	n.stop()
	return nil
}

// memNow returns the heap in use (after a GC), the process's RSS (bytes) and goroutines.
func memNow() (heap, rss float64, goroutines int) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse + ms.StackInuse), procRSS(os.Getpid()) * 1024 * 1024, runtime.NumGoroutine()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func machine() string {
	return fmt.Sprintf("%d cores (%s), %s", runtime.NumCPU(), benchenv.CPUModel(), runtime.Version())
}
