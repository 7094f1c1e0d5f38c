package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/bench/benchenv"
	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab"
)

// Sentinel errors.
var (
	errSetup  = errors.New("bench/cni: set-up failed")
	errBurst  = errors.New("bench/cni: burst check failed")
	errStuck  = errors.New("bench/cni: coild did not finish a DEL in time")
	errResult = errors.New("bench/cni: unusable ADD result")
)

type options struct {
	n, warmup, burst, rounds int
	coil, coild, pluginDir   string
	dir                      string
	poolSubnet               string
	directOnly               bool
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100, "timed ADD+DEL samples per plugin (interleaved)")
	flag.IntVar(&o.warmup, "warmup", 3, "untimed rounds before the samples (coild takes its first block here)")
	flag.IntVar(&o.burst, "burst", 100, "pods per burst (all ADDed at once, then all DELed at once)")
	flag.IntVar(&o.rounds, "rounds", 3, "bursts per plugin (interleaved)")
	flag.StringVar(&o.coil, "coil", "bin/coil", "the coil CNI plugin binary")
	flag.StringVar(&o.coild, "coild", "bin/coild", "the coild binary")
	flag.StringVar(&o.pluginDir, "plugins", ".tools/bin", "directory holding cnitool, ptp and host-local (scripts/setup.sh)")
	flag.StringVar(&o.dir, "dir", "", "lab work directory to keep (coild's log, etcd); default: a temporary one, removed")
	flag.StringVar(&o.poolSubnet, "pool", "10.100.0.0/16", "subnet of coil's pool \"default\"")
	flag.BoolVar(&o.directOnly, "direct-only", false, "only the warm-up and the bursts straight to coild's socket (investigating coild)")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := lab.Signals(context.Background())
	defer stop()
	if err := run(ctx, o, logger); err != nil {
		fmt.Fprintf(os.Stderr, "bench/cni: %+v\n", err)
		stop()
		os.Exit(1)
	}
}

// kind is one plugin under test, with its own node namespace and netconf.
type kind struct {
	name    string // "coil", "ptp", "noop"
	net     string // network name in the netconf
	confDir string // NETCONFPATH
	node    *lab.Node
}

type bench struct {
	o        options
	log      *slog.Logger
	lab      *lab.Lab
	cniPath  string
	kinds    []*kind
	coil     *kind
	stateDir string // coild's --state-dir
}

func run(ctx context.Context, o options, log *slog.Logger) (err error) {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	o.coil, o.coild, o.pluginDir = abs(o.coil), abs(o.coild), abs(o.pluginDir)
	for _, f := range []string{o.coil, o.coild, filepath.Join(o.pluginDir, "cnitool"), filepath.Join(o.pluginDir, "ptp"), filepath.Join(o.pluginDir, "host-local")} {
		if _, serr := os.Stat(f); serr != nil {
			return errors.Wrapf(errSetup, "%s missing (make build; scripts/setup.sh tools): %v", f, serr)
		}
	}
	if o.dir != "" {
		o.dir = abs(o.dir)
	}
	// lab finds cnitool on PATH first.
	if err := os.Setenv("PATH", o.pluginDir+string(os.PathListSeparator)+os.Getenv("PATH")); err != nil {
		return errors.Wrap(err, "set PATH")
	}
	info := machineInfo()

	l, err := lab.Start(ctx, lab.Config{Nodes: 3, DisableIPv6: true, Dir: o.dir, Logger: log})
	if err != nil {
		return errors.Wrap(err, "start lab")
	}
	defer func() {
		if cerr := l.Close(); cerr != nil {
			err = errors.CombineErrors(err, cerr)
		}
	}()
	b := &bench{o: o, log: log, lab: l}
	if err := b.setup(ctx, root); err != nil {
		return err
	}
	if err := b.startCoild(ctx); err != nil {
		return err
	}
	rep := &report{info: info, o: o, kinds: b.kinds}
	if err := b.latency(ctx, rep); err != nil {
		return err
	}
	if o.directOnly {
		for r := range o.rounds {
			res, err := b.directBurst(ctx, r)
			if err != nil {
				return err
			}
			rep.direct = append(rep.direct, res)
		}
	} else if err := b.bursts(ctx, rep); err != nil {
		return err
	}
	rep.info.loadEnd = benchenv.LoadAvg()
	rep.write(os.Stdout)
	if rep.burstFailed != "" {
		return errors.Wrap(errBurst, rep.burstFailed)
	}
	return nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", errors.Wrap(err, "getwd")
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.Wrap(errSetup, "run from inside the repository (no go.mod found)")
		}
		dir = parent
	}
}

// setup builds noop, fills CNI_PATH with the three plugins and writes one netconf per kind.
func (b *bench) setup(ctx context.Context, root string) error {
	l := b.lab
	b.cniPath = filepath.Join(l.Dir, "cnibin")
	if err := os.MkdirAll(b.cniPath, 0o755); err != nil {
		return errors.Wrap(err, "cni bin dir")
	}
	if err := gobuild.Build(ctx, filepath.Join(b.cniPath, "noop"), "./bench/cni/noop", true); err != nil {
		return errors.Wrapf(errSetup, "build noop: %v", err)
	}
	links := map[string]string{
		"coil":       b.o.coil,
		"ptp":        filepath.Join(b.o.pluginDir, "ptp"),
		"host-local": filepath.Join(b.o.pluginDir, "host-local"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(b.cniPath, name)); err != nil {
			return errors.Wrap(err, "cni bin link")
		}
	}
	coilNode := l.Nodes[0]
	b.stateDir = filepath.Join(coilNode.Dir, "state")
	confs := []struct {
		kind, net, conf string
		node            *lab.Node
	}{
		{"coil", "coilnet", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"coilnet","type":"coil","socket":%q}`,
			filepath.Join(coilNode.Dir, "coild.sock")), coilNode},
		{"ptp", "ptpnet", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ptpnet","type":"ptp","ipam":{"type":"host-local","subnet":"10.200.0.0/16","dataDir":%q}}`,
			filepath.Join(l.Nodes[1].Dir, "hl")), l.Nodes[1]},
		{"noop", "noopnet", `{"cniVersion":"1.1.0","name":"noopnet","type":"noop"}`, l.Nodes[2]},
	}
	for _, c := range confs {
		dir := filepath.Join(l.Dir, "conf-"+c.kind)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return errors.Wrap(err, "netconf dir")
		}
		if err := os.WriteFile(filepath.Join(dir, "10-"+c.net+".conf"), []byte(c.conf), 0o644); err != nil {
			return errors.Wrap(err, "netconf")
		}
		k := &kind{name: c.kind, net: c.net, confDir: dir, node: c.node}
		b.kinds = append(b.kinds, k)
		if c.kind == "coil" {
			b.coil = k
		}
	}
	return nil
}

// metricsAddr is coild's metrics endpoint: on the coil node namespace's own loopback,
// read with curl run inside that namespace.
const metricsAddr = "127.0.0.1:9384"

// scrape reads coild's metrics as series -> value (histogram buckets left out).
func (b *bench) scrape(ctx context.Context) (map[string]float64, error) {
	out, err := b.coil.node.Exec(ctx, "curl", "-sf", "http://"+metricsAddr+"/metrics")
	if err != nil {
		return nil, errors.Wrap(err, "scrape coild metrics")
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || line[0] == '#' || strings.Contains(line, "_bucket{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			m[line[:i]] = v
		}
	}
	return m, nil
}

// serverSide is what coild itself reports for a phase: its own time per request (from
// coil_cni_request_duration_seconds) and how many log appends (etcd Txns) it made.
type serverSide struct {
	addMean, delMean time.Duration
	adds, dels       float64
	appends          float64
}

func diffServer(before, after map[string]float64) serverSide {
	d := func(k string) float64 { return after[k] - before[k] }
	var s serverSide
	s.adds = d(`coil_cni_request_duration_seconds_count{command="ADD",result="ok"}`)
	s.dels = d(`coil_cni_request_duration_seconds_count{command="DEL",result="ok"}`)
	if s.adds > 0 {
		s.addMean = time.Duration(d(`coil_cni_request_duration_seconds_sum{command="ADD",result="ok"}`) / s.adds * float64(time.Second))
	}
	if s.dels > 0 {
		s.delMean = time.Duration(d(`coil_cni_request_duration_seconds_sum{command="DEL",result="ok"}`) / s.dels * float64(time.Second))
	}
	for k := range after {
		if strings.HasPrefix(k, "coil_log_appends_total{") {
			s.appends += d(k)
		}
	}
	return s
}

// startCoild runs coild in the coil node, waits for its socket to answer STATUS, creates
// the pool and ADDs a first pod until it succeeds (coild sees the pool through its watch).
func (b *bench) startCoild(ctx context.Context) error {
	n := b.coil.node
	sock := filepath.Join(n.Dir, "coild.sock")
	etcdURL := "unix://" + filepath.Join(n.Dir, "etcd.sock")
	p, err := n.StartProcess(ctx, b.o.coild, "--node", n.Name,
		"--embedded-etcd", filepath.Join(n.Dir, "etcd"), "--etcd-endpoints", etcdURL,
		"--socket", sock, "--state-dir", b.stateDir, "--metrics-addr", metricsAddr)
	if err != nil {
		return err
	}
	b.log.Info("coild started", "pid", p.PID(), "log", p.LogPath)
	if err := lab.WaitCoild(ctx, p, sock, 60*time.Second); err != nil {
		return errors.Mark(errors.Wrap(err, "wait for coild"), errSetup)
	}
	if err := createPool(ctx, etcdURL, b.o.poolSubnet); err != nil {
		return err
	}
	b.log.Info("coild ready, pool created", "subnet", b.o.poolSubnet)
	return nil
}

func createPool(ctx context.Context, etcdURL, subnet string) error {
	eps, err := etcdclient.ParseEndpoints(etcdURL)
	if err != nil {
		return err
	}
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: eps})
	if err != nil {
		return err
	}
	defer cli.Close()
	elog := events.NewEtcdLog(cli, events.EtcdConfig{Prefix: "/coil/"})
	defer elog.Close()
	sn, err := allocator.ParseSubnet(subnet)
	if err != nil {
		return err
	}
	admin := &allocator.Admin{Log: elog, Clock: events.SystemClock{}, Actor: "bench-cni"}
	err = admin.CreatePool(ctx, &events.PoolCreated{Name: "default", BlockSizeBits: allocator.DefaultBlockSizeBits, Subnets: []events.Subnet{sn}})
	return errors.Wrap(err, "create pool default")
}

// poll calls cond every interval until it returns true, an error, or within passes.
func poll(ctx context.Context, within, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errors.Newf("bench/cni: condition not met within %v", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// cni runs one cnitool command for kind k on pod and returns its wall time, measured
// around the whole wrapper (ip netns exec + unshare + mount + cnitool + plugin).
func (b *bench) cni(ctx context.Context, k *kind, cmd, pod string) (time.Duration, []byte, error) {
	t0 := time.Now()
	out, err := k.node.CNI(ctx, cmd, k.confDir, b.cniPath, k.net, pod)
	d := time.Since(t0)
	if err != nil {
		if ctx.Err() != nil {
			return d, out, ctx.Err()
		}
		return d, out, errors.Wrapf(err, "%s %s %s", k.name, cmd, pod)
	}
	return d, out, nil
}

// parseResult returns the addresses and the host-side interface of an ADD result.
func parseResult(out []byte) ([]netip.Addr, string, error) {
	r, err := lab.ParseCNIResult(out)
	if err != nil {
		return nil, "", errors.Mark(err, errResult)
	}
	return r.Addrs, r.HostIf, nil
}

// rotate returns kinds starting at index i%len, so no plugin always follows the same one.
func rotate(ks []*kind, i int) []*kind {
	i %= len(ks)
	return append(append([]*kind(nil), ks[i:]...), ks[:i]...)
}

// samples holds per-kind latency samples.
type samples map[string][]time.Duration

// latency runs warm-up rounds, then o.n rounds; each round ADDs one fresh pod per kind, then
// DELs them, in rotating order. After coil's DEL it waits (untimed) until coild's background
// work for that pod is done, so it never overlaps another plugin's timed call.
func (b *bench) latency(ctx context.Context, rep *report) error {
	rep.add, rep.del = samples{}, samples{}
	if b.o.directOnly {
		b.o.n = 0
	}
	rep.linkGone, rep.released = nil, nil
	total := b.o.warmup + b.o.n
	pods := make([]map[string]string, total)
	b.log.Info("creating pod namespaces", "count", total*len(b.kinds))
	for i := range total {
		pods[i] = map[string]string{}
		for _, k := range b.kinds {
			p, err := b.lab.AddPodNS(k.node, fmt.Sprintf("l%04d", i))
			if err != nil {
				return err
			}
			pods[i][k.name] = p
		}
	}
	defer b.removePods(total, func(i int) string { return fmt.Sprintf("l%04d", i) })
	b.log.Info("latency: interleaved ADD/DEL", "warmup", b.o.warmup, "samples", b.o.n)
	var before map[string]float64
	for i := range total {
		timed := i >= b.o.warmup
		if i == b.o.warmup {
			var err error
			if before, err = b.scrape(ctx); err != nil {
				return err
			}
		}
		order := rotate(b.kinds, i)
		veth := ""
		for _, k := range order {
			d, out, err := b.cni(ctx, k, "add", pods[i][k.name])
			if err != nil && !timed && k == b.coil && ctx.Err() == nil {
				// The first ADD may race coild's view of the new pool: retry once it is there.
				last := err
				err = poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
					d, out, last = b.cni(ctx, k, "add", pods[i][k.name])
					return last == nil, nil
				})
				if err != nil {
					err = errors.WithSecondaryError(err, last)
				}
			}
			if err != nil {
				return err
			}
			if timed {
				rep.add[k.name] = append(rep.add[k.name], d)
			}
			if k == b.coil {
				_, hostIf, perr := parseResult(out)
				if perr != nil {
					return perr
				}
				veth = hostIf
			}
		}
		for _, k := range order {
			d, _, err := b.cni(ctx, k, "del", pods[i][k.name])
			if err != nil {
				return err
			}
			if timed {
				rep.del[k.name] = append(rep.del[k.name], d)
			}
			if k == b.coil {
				gone, rel, err := b.waitCoilDone(ctx, []string{veth})
				if err != nil {
					return err
				}
				if timed {
					rep.linkGone = append(rep.linkGone, gone+d)
					rep.released = append(rep.released, rel+d)
				}
			}
		}
		if (i+1)%25 == 0 {
			b.log.Info("latency progress", "rounds", i+1, "of", total)
		}
	}
	after, err := b.scrape(ctx)
	if err != nil {
		return err
	}
	rep.latServer = diffServer(before, after)
	return nil
}

func (b *bench) removePods(n int, name func(int) string) {
	for i := range n {
		for _, k := range b.kinds {
			if err := b.lab.RemovePodNS(k.node, name(i)); err != nil {
				b.log.Warn("remove pod namespace", "err", err)
			}
		}
	}
}

// waitCoilDone polls until none of the host veths exist in the coil node (gone) and coild's
// DEL intents are all removed, i.e. the addresses are released (released). Durations are
// counted from the call. Polling costs one `ip` exec (~2-4 ms) per check.
func (b *bench) waitCoilDone(ctx context.Context, veths []string) (gone, released time.Duration, err error) {
	t0 := time.Now()
	want := map[string]bool{}
	for _, v := range veths {
		want[v] = true
	}
	err = poll(ctx, 60*time.Second, time.Millisecond, func() (bool, error) {
		out, err := b.coil.node.IP(ctx, "-o", "link", "show")
		if err != nil {
			return false, err
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && want[strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return 0, 0, errors.Wrapf(errStuck, "veths still present: %v", err)
	}
	gone = time.Since(t0)
	err = poll(ctx, 60*time.Second, time.Millisecond, func() (bool, error) {
		es, err := os.ReadDir(filepath.Join(b.stateDir, "del"))
		if err != nil {
			return false, errors.Wrap(err, "read coild's DEL intents")
		}
		for _, e := range es {
			if want[e.Name()] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return 0, 0, errors.Wrapf(errStuck, "DEL intents still present: %v", err)
	}
	return gone, time.Since(t0), nil
}

// burstResult is one burst of one kind.
type burstResult struct {
	kind              string
	addWall, delWall  time.Duration
	addEach, delEach  []time.Duration
	distinct, failed  int
	coilGone, coilRel time.Duration // coil only: from the start of the DEL burst
	server            serverSide    // coil only
}

// bursts runs o.rounds rounds; each round, per kind in rotating order: create o.burst pod
// namespaces (untimed), ADD them all at once, check the addresses, DEL them all at once
// and, for coil, wait until coild's background DELs are done.
func (b *bench) bursts(ctx context.Context, rep *report) error {
	for r := range b.o.rounds {
		name := func(i int) string { return fmt.Sprintf("b%d-%04d", r, i) }
		for _, k := range rotate(b.kinds, r) {
			pods := make([]string, b.o.burst)
			for i := range pods {
				p, err := b.lab.AddPodNS(k.node, name(i))
				if err != nil {
					return err
				}
				pods[i] = p
			}
			b.log.Info("burst", "round", r, "kind", k.name, "pods", len(pods))
			res, err := b.burst(ctx, k, pods)
			if err != nil {
				return err
			}
			rep.bursts = append(rep.bursts, res)
			if res.failed > 0 {
				rep.burstFailed += fmt.Sprintf("%s round %d: %d ADDs failed; ", k.name, r, res.failed)
			}
			if k.name != "noop" && res.distinct != b.o.burst {
				rep.burstFailed += fmt.Sprintf("%s round %d: %d distinct addresses of %d; ", k.name, r, res.distinct, b.o.burst)
			}
		}
		b.removePods(b.o.burst, name)
	}
	for r := range b.o.rounds {
		res, err := b.directBurst(ctx, r)
		if err != nil {
			return err
		}
		rep.direct = append(rep.direct, res)
		if res.failed > 0 || res.distinct != b.o.burst {
			rep.burstFailed += fmt.Sprintf("direct round %d: %d failed, %d distinct; ", r, res.failed, res.distinct)
		}
	}
	return nil
}

// directBurst sends o.burst ADDs to coild at once straight over its socket (cniproto, no
// exec, no cnitool), then as many DELs, and waits until coild's background DELs are done:
// what coild alone costs for a burst.
func (b *bench) directBurst(ctx context.Context, r int) (res burstResult, err error) {
	res.kind = "coild direct"
	name := func(i int) string { return fmt.Sprintf("d%d-%04d", r, i) }
	defer b.removePods(b.o.burst, name)
	pods := make([]string, b.o.burst)
	for i := range pods {
		if pods[i], err = b.lab.AddPodNS(b.coil.node, name(i)); err != nil {
			return res, err
		}
	}
	b.log.Info("burst straight to coild", "round", r, "pods", len(pods))
	before, err := b.scrape(ctx)
	if err != nil {
		return res, err
	}
	cl := cniproto.NewClient(filepath.Join(b.coil.node.Dir, "coild.sock"), time.Minute)
	req := func(i int) *cniproto.Request {
		return &cniproto.Request{ContainerID: fmt.Sprintf("direct-%d-%04d", r, i), IfName: "eth0", NetNS: pods[i]}
	}
	run := func(call func(i int) error) (time.Duration, []time.Duration, []error) {
		each := make([]time.Duration, len(pods))
		errs := make([]error, len(pods))
		wall := testutil.Burst(len(pods), func(i int) {
			t := time.Now()
			errs[i] = call(i)
			each[i] = time.Since(t)
		})
		return wall, each, errs
	}
	addrs := make([][]netip.Addr, len(pods))
	veths := make([]string, len(pods))
	var errs []error
	res.addWall, res.addEach, errs = run(func(i int) error {
		a, err := cl.Add(ctx, req(i))
		if err == nil {
			addrs[i], veths[i] = a.Addrs, a.HostVeth
		}
		return err
	})
	seen := map[netip.Addr]bool{}
	for i, err := range errs {
		if err != nil {
			res.failed++
			b.log.Error("direct ADD failed", "pod", pods[i], "err", err)
		}
		for _, a := range addrs[i] {
			seen[a] = true
		}
	}
	res.distinct = len(seen)
	t0 := time.Now()
	res.delWall, res.delEach, errs = run(func(i int) error { return cl.Del(ctx, req(i)) })
	for i, err := range errs {
		if err != nil {
			return res, errors.Wrapf(err, "direct DEL %s", pods[i])
		}
	}
	waitFrom := time.Now()
	gone, rel, err := b.waitCoilDone(ctx, slices.DeleteFunc(veths, func(v string) bool { return v == "" }))
	if err != nil {
		return res, err
	}
	res.coilGone, res.coilRel = waitFrom.Sub(t0)+gone, waitFrom.Sub(t0)+rel
	after, err := b.scrape(ctx)
	if err != nil {
		return res, err
	}
	res.server = diffServer(before, after)
	return res, b.checkNoCoilLinks(ctx)
}

// concurrently runs cmd on every pod at once and returns the wall time, each call's time
// and each call's output and error.
func (b *bench) concurrently(ctx context.Context, k *kind, cmd string, pods []string) (time.Duration, []time.Duration, [][]byte, []error) {
	each := make([]time.Duration, len(pods))
	outs := make([][]byte, len(pods))
	errs := make([]error, len(pods))
	wall := testutil.Burst(len(pods), func(i int) {
		each[i], outs[i], errs[i] = b.cni(ctx, k, cmd, pods[i])
	})
	return wall, each, outs, errs
}

func (b *bench) burst(ctx context.Context, k *kind, pods []string) (res burstResult, err error) {
	res.kind = k.name
	if k == b.coil {
		before, err := b.scrape(ctx)
		if err != nil {
			return res, err
		}
		defer func() {
			after, serr := b.scrape(ctx)
			if err == nil && serr != nil {
				err = serr
			}
			res.server = diffServer(before, after)
		}()
	}
	var outs [][]byte
	var errs []error
	res.addWall, res.addEach, outs, errs = b.concurrently(ctx, k, "add", pods)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	seen := map[netip.Addr]bool{}
	var veths []string
	for i, err := range errs {
		if err != nil {
			res.failed++
			b.log.Error("burst ADD failed", "kind", k.name, "pod", pods[i], "err", err)
			continue
		}
		addrs, hostIf, err := parseResult(outs[i])
		if err != nil {
			res.failed++
			b.log.Error("burst ADD result", "kind", k.name, "pod", pods[i], "err", err)
			continue
		}
		for _, a := range addrs {
			seen[a] = true
		}
		if hostIf != "" {
			veths = append(veths, hostIf)
		}
	}
	res.distinct = len(seen)
	t0 := time.Now()
	res.delWall, res.delEach, _, errs = b.concurrently(ctx, k, "del", pods)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	for i, err := range errs {
		if err != nil {
			return res, errors.Wrapf(err, "burst DEL %s", pods[i])
		}
	}
	if k == b.coil {
		waitFrom := time.Now()
		gone, rel, err := b.waitCoilDone(ctx, veths)
		if err != nil {
			return res, err
		}
		// Measured from the start of the DEL burst, not from its end.
		res.coilGone, res.coilRel = waitFrom.Sub(t0)+gone, waitFrom.Sub(t0)+rel
		if err := b.checkNoCoilLinks(ctx); err != nil {
			return res, err
		}
	}
	return res, nil
}

// checkNoCoilLinks fails if any coil veth is left in the coil node.
func (b *bench) checkNoCoilLinks(ctx context.Context) error {
	out, err := b.coil.node.IP(ctx, "-o", "link", "show")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[1], "coil") {
			return errors.Wrapf(errStuck, "coil veth left after the burst: %s", f[1])
		}
	}
	return nil
}

// ---- report ----

type machine struct {
	date, model, kernel string
	cpus                int
	loadStart, loadEnd  string
}

func machineInfo() machine {
	m := machine{date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), cpus: runtime.NumCPU(), loadStart: benchenv.LoadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	return m
}

type report struct {
	info               machine
	o                  options
	kinds              []*kind
	add, del           samples
	linkGone, released []time.Duration
	latServer          serverSide
	bursts             []burstResult
	direct             []burstResult
	burstFailed        string
}

// pct is the nearest-rank percentile (p in 0..100) of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (r *report) write(w io.Writer) {
	i := r.info
	fmt.Fprintf(w, "Run %s on %d CPUs (%s), kernel %s; load average %s at start, %s at end.\n\n",
		i.date, i.cpus, i.model, i.kernel, i.loadStart, i.loadEnd)
	fmt.Fprintf(w, "Latency: %d samples per plugin after %d warm-up rounds, interleaved; wall time around each cnitool call (ms).\n\n", r.o.n, r.o.warmup)
	fmt.Fprintln(w, "| plugin | ADD p50 | ADD p90 | ADD p99 | DEL p50 | DEL p90 | DEL p99 |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, k := range r.kinds {
		a, d := r.add[k.name], r.del[k.name]
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", k.name,
			ms(pct(a, 50)), ms(pct(a, 90)), ms(pct(a, 99)), ms(pct(d, 50)), ms(pct(d, 90)), ms(pct(d, 99)))
	}
	fmt.Fprintf(w, "| coil: DEL call until its veth is gone | %s | %s | %s | | | |\n", ms(pct(r.linkGone, 50)), ms(pct(r.linkGone, 90)), ms(pct(r.linkGone, 99)))
	fmt.Fprintf(w, "| coil: DEL call until its address is released | %s | %s | %s | | | |\n\n", ms(pct(r.released, 50)), ms(pct(r.released, 90)), ms(pct(r.released, 99)))
	fmt.Fprintf(w, "coild's own time per request in this phase (its histogram, mean): ADD %s ms over %.0f, DEL %s ms over %.0f; %.0f log appends (etcd Txns).\n\n",
		ms(r.latServer.addMean), r.latServer.adds, ms(r.latServer.delMean), r.latServer.dels, r.latServer.appends)
	ca, pa := pct(r.add["coil"], 50), pct(r.add["ptp"], 50)
	cd, pd := pct(r.del["coil"], 50), pct(r.del["ptp"], 50)
	fmt.Fprintf(w, "- coil/ptp ADD median: %.2f (target ≤ 0.75: %s); p99: %.2f\n", ratio(ca, pa), verdict(ratio(ca, pa) <= 0.75),
		ratio(pct(r.add["coil"], 99), pct(r.add["ptp"], 99)))
	fmt.Fprintf(w, "- coil/ptp DEL median: %.2f (target ≤ 0.6: %s); p99: %.2f\n", ratio(cd, pd), verdict(ratio(cd, pd) <= 0.6),
		ratio(pct(r.del["coil"], 99), pct(r.del["ptp"], 99)))
	na, nd := pct(r.add["noop"], 50), pct(r.del["noop"], 50)
	fmt.Fprintf(w, "- above the noop floor (median): coil ADD +%s ms, ptp ADD +%s ms; coil DEL +%s ms, ptp DEL +%s ms\n\n",
		ms(ca-na), ms(pa-na), ms(cd-nd), ms(pd-nd))

	fmt.Fprintf(w, "Burst: %d pods ADDed at once, then DELed at once, %d rounds per plugin, interleaved (ms).\n\n", r.o.burst, r.o.rounds)
	fmt.Fprintln(w, "| round | plugin | ADD wall | ADD each p50 / p99 | ADD failed | distinct addresses | DEL wall | coil: DEL start until all veths gone | until all released |")
	fmt.Fprintln(w, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	walls := map[string][]time.Duration{}
	for n, br := range r.bursts {
		round := n / len(r.kinds)
		gone, rel, distinct := "", "", fmt.Sprint(br.distinct)
		if br.kind == "coil" {
			gone, rel = ms(br.coilGone), ms(br.coilRel)
		}
		if br.kind == "noop" {
			distinct = "n/a"
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s / %s | %d | %s | %s | %s | %s |\n", round, br.kind, ms(br.addWall),
			ms(pct(br.addEach, 50)), ms(pct(br.addEach, 99)), br.failed, distinct, ms(br.delWall), gone, rel)
		walls[br.kind] = append(walls[br.kind], br.addWall)
	}
	fmt.Fprintln(w)
	for n, br := range r.bursts {
		if br.kind == "coil" {
			fmt.Fprintf(w, "- round %d, coild's own time (mean): ADD %s ms, DEL %s ms; %.0f log appends for %.0f ADDs\n",
				n/len(r.kinds), ms(br.server.addMean), ms(br.server.delMean), br.server.appends, br.server.adds)
		}
	}
	if len(r.direct) > 0 {
		fmt.Fprintf(w, "\ncoild alone: %d ADDs sent at once straight to its socket (no exec, no cnitool), then %d DELs (ms).\n\n", r.o.burst, r.o.burst)
		fmt.Fprintln(w, "| round | ADD wall | ADD each p50 / p99 | coild ADD mean | log appends | distinct addresses | DEL wall | DEL start until all veths gone | until all released |")
		fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for n, d := range r.direct {
			fmt.Fprintf(w, "| %d | %s | %s / %s | %s | %.0f | %d | %s | %s | %s |\n", n, ms(d.addWall), ms(pct(d.addEach, 50)), ms(pct(d.addEach, 99)),
				ms(d.server.addMean), d.server.appends, d.distinct, ms(d.delWall), ms(d.coilGone), ms(d.coilRel))
		}
		fmt.Fprintln(w)
	}
	cw, pw := pct(walls["coil"], 50), pct(walls["ptp"], 50)
	fmt.Fprintf(w, "- burst ADD wall, median of rounds: coil %s ms, ptp %s ms, noop %s ms; coil/ptp %.2f (target ≤ 0.7: %s)\n",
		ms(cw), ms(pw), ms(pct(walls["noop"], 50)), ratio(cw, pw), verdict(ratio(cw, pw) <= 0.7))
	if r.burstFailed != "" {
		fmt.Fprintf(w, "- **burst check failed**: %s\n", r.burstFailed)
	} else {
		fmt.Fprintf(w, "- every burst ADD succeeded with distinct addresses (coil, ptp)\n")
	}
}
