package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/coil-net/coil/internal/etcdembed"
)

// The etcd cluster runs in a child process (this same binary, re-executed with
// -etcd-child), so that the harness process holds only the simulated nodes: its memory
// per node is the clients' own, and etcd's CPU time is read from the child's /proc entry.
// The child embeds all three members in-process (loopback TCP peers, unix-socket client
// URLs, fsync on) and stops them when its stdin closes.

// etcdCluster is the child process running the members.
type etcdCluster struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	dir       string
	endpoints []string
}

// startEtcd starts the child with members members under a new temporary directory and
// waits until every member serves clients.
func startEtcd(ctx context.Context, members int, fsync bool, timings, cpuProfile string) (*etcdCluster, error) {
	dir, err := os.MkdirTemp("", "coil-scale-")
	if err != nil {
		return nil, errors.Wrap(err, "etcd data directory")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, errors.Wrap(err, "find this binary")
	}
	cmd := exec.CommandContext(ctx, self, "-etcd-child", dir, "-members", strconv.Itoa(members),
		"-fsync="+strconv.FormatBool(fsync), "-etcd-timings", timings, "-etcd-cpuprofile", cpuProfile)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, errors.Wrap(err, "etcd child stdin")
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, errors.Wrap(err, "etcd child stdout")
	}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, errors.Wrap(err, "start etcd child")
	}
	c := &etcdCluster{cmd: cmd, stdin: stdin, dir: dir}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if eps, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			c.endpoints = strings.Split(eps, ",")
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return c, nil
		}
	}
	c.stop()
	return nil, errors.New("etcd child exited before it was ready")
}

// stop closes the members (the child exits when its stdin closes) and removes the data.
func (c *etcdCluster) stop() {
	_ = c.stdin.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	_ = os.RemoveAll(c.dir)
}

// cpuSeconds is the child's CPU time so far (user + system, every thread).
func (c *etcdCluster) cpuSeconds() float64 { return procCPU(c.cmd.Process.Pid) }

// rssMiB is the child's resident memory.
func (c *etcdCluster) rssMiB() float64 { return procRSS(c.cmd.Process.Pid) }

// dbSize returns the largest DB size (bytes) reported by the members.
func dbSize(ctx context.Context, cli *clientv3.Client, endpoints []string) (int64, int64) {
	var size, inUse int64
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, ep := range endpoints {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			continue
		}
		size = max(size, st.DbSize)
		inUse = max(inUse, st.DbSizeInUse)
	}
	return size, inUse
}

// etcdChild is the child's main: start the members, print READY, wait for stdin to close.
// With cpuProfile, it writes a CPU profile of the members from READY until then.
func etcdChild(dir string, members int, fsync bool, timings, cpuProfile string) error {
	signal.Ignore(syscall.SIGINT) // the parent stops us by closing stdin
	sock, err := os.MkdirTemp("", "coilsc")
	if err != nil {
		return err
	}
	defer os.RemoveAll(sock)
	var names, peers, clients, initial []string
	for i := range members {
		u, err := etcdembed.FreeLoopbackURL()
		if err != nil {
			return err
		}
		names = append(names, fmt.Sprint("m", i))
		peers = append(peers, u)
		clients = append(clients, "unix://"+filepath.Join(sock, fmt.Sprintf("m%d.sock", i)))
		initial = append(initial, names[i]+"="+u)
	}
	var tick, election uint
	switch timings {
	case "default":
	case "fast":
		tick, election = 10, 100
	default:
		return errors.Newf("-etcd-timings %q: want default or fast", timings)
	}
	// etcd's own warnings (slow fsync, missed heartbeats, elections) go to a file kept
	// after the run, to tell what a slow run waited for.
	logPath := filepath.Join(os.TempDir(), fmt.Sprintf("coil-scale-etcd-%d.log", os.Getpid()))
	zcfg := zap.NewProductionConfig()
	zcfg.Level = zap.NewAtomicLevelAt(zap.WarnLevel)
	zcfg.OutputPaths, zcfg.ErrorOutputPaths = []string{logPath}, []string{logPath}
	lg, err := zcfg.Build()
	if err != nil {
		lg = zap.NewNop()
	}
	defer func() { _ = lg.Sync() }()
	fmt.Fprintln(os.Stderr, "etcd warnings in", logPath)
	es := make([]*embed.Etcd, members)
	errs := make([]error, members)
	var wg sync.WaitGroup
	for i := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			es[i], errs[i] = etcdembed.Start(etcdembed.Config{
				Dir: filepath.Join(dir, names[i]), ClientURL: clients[i], PeerURL: peers[i], Name: names[i],
				InitialCluster: strings.Join(initial, ","), NoFsync: !fsync, TickMs: tick, ElectionMs: election,
				QuotaBackendBytes: 8 << 30, Logger: lg.With(zap.String("member", names[i])), ReadyTimeout: 60 * time.Second,
			})
		}()
	}
	wg.Wait()
	defer func() {
		for _, e := range es {
			if e != nil {
				e.Close()
			}
		}
	}()
	for i, err := range errs {
		if err != nil {
			return errors.Wrapf(err, "member %s", names[i])
		}
	}
	stopProfile, err := startCPUProfile(cpuProfile)
	if err != nil {
		return errors.Wrap(err, "etcd CPU profile")
	}
	defer stopProfile()
	fmt.Println("READY " + strings.Join(clients, ","))
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// procCPU reads a process's user+system CPU seconds from /proc/PID/stat.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+2:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// procRSS reads a process's resident set size in MiB from /proc/PID/status.
func procRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
