package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdConfig describes an etcd cluster of separate etcd server processes in the lab.
type EtcdConfig struct {
	// Binary is the etcd server binary (e.g. built by `go build go.etcd.io/etcd/server/v3`).
	// Required.
	Binary string
	// Members is the number of members (default 3).
	Members int
	// NoFsync runs etcd with --unsafe-no-fsync (off by default: members fsync, as in
	// production).
	NoFsync bool
	// HeartbeatMs and ElectionMs are etcd's raft timings; zero keeps etcd's defaults
	// (100 and 1000 ms).
	HeartbeatMs, ElectionMs int
}

// Etcd is an etcd cluster whose members are processes in their own network namespace
// ("coillab-<lab>-etcd"): peers talk over that namespace's loopback, clients reach each
// member through a unix socket in the lab's directory, from any namespace. Members can be
// killed (SIGKILL), restarted on their data, paused (SIGSTOP) and resumed. Its methods are
// safe for concurrent use.
type Etcd struct {
	NetNS   string
	Members []*EtcdMember

	lab *Lab
	cfg EtcdConfig
	mu  sync.Mutex
}

// EtcdMember is one member.
type EtcdMember struct {
	Index     int
	Name      string // "m0", "m1", ...
	Dir       string // data directory
	ClientURL string // unix:///.../mN.sock
	PeerURL   string // http://127.0.0.1:PORT inside the etcd namespace

	proc   *Process
	paused bool
	starts int
}

// StartEtcd starts an etcd cluster of cfg.Members processes and waits until every member
// serves with a leader (or ctx ends). The processes are stopped at Close.
func (l *Lab) StartEtcd(ctx context.Context, cfg EtcdConfig) (*Etcd, error) {
	if cfg.Binary == "" {
		return nil, errors.Wrap(ErrConfig, "etcd: Binary is required")
	}
	if cfg.Members == 0 {
		cfg.Members = 3
	}
	if cfg.Members < 1 || cfg.Members > 9 {
		return nil, errors.Wrapf(ErrConfig, "etcd: %d members (1..9)", cfg.Members)
	}
	e := &Etcd{NetNS: Prefix + l.Name + "-etcd", lab: l, cfg: cfg}
	if err := l.addNetNS(ctx, e.NetNS); err != nil {
		return nil, err
	}
	dir := filepath.Join(l.Dir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errors.Wrap(err, "lab: etcd dir")
	}
	for i := range cfg.Members {
		m := &EtcdMember{
			Index: i, Name: fmt.Sprintf("m%d", i), Dir: filepath.Join(dir, fmt.Sprintf("m%d", i)),
			ClientURL: "unix://" + filepath.Join(dir, fmt.Sprintf("m%d.sock", i)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", 2380+i),
		}
		if len(m.ClientURL) > 100 {
			return nil, errors.Wrapf(ErrConfig, "etcd: socket path %s too long; use a shorter lab Dir", m.ClientURL)
		}
		e.Members = append(e.Members, m)
	}
	for _, m := range e.Members {
		if err := e.startMember(ctx, m); err != nil {
			return nil, err
		}
	}
	if err := e.WaitHealthy(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Endpoints are the members' client URLs, in member order.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, m := range e.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

func (e *Etcd) startMember(ctx context.Context, m *EtcdMember) error {
	var initial []string
	for _, o := range e.Members {
		initial = append(initial, o.Name+"="+o.PeerURL)
	}
	state := "new"
	if _, err := os.Stat(filepath.Join(m.Dir, "member")); err == nil {
		state = "existing"
	}
	_ = os.Remove(strings.TrimPrefix(m.ClientURL, "unix://")) // a killed member leaves its socket
	args := []string{
		"--name", m.Name, "--data-dir", m.Dir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", state,
		"--initial-cluster-token", "coillab-" + e.lab.Name, "--log-level", "warn",
	}
	if e.cfg.NoFsync {
		args = append(args, "--unsafe-no-fsync")
	}
	if e.cfg.HeartbeatMs != 0 {
		args = append(args, "--heartbeat-interval", fmt.Sprint(e.cfg.HeartbeatMs))
	}
	if e.cfg.ElectionMs != 0 {
		args = append(args, "--election-timeout", fmt.Sprint(e.cfg.ElectionMs))
	}
	p, err := e.lab.startProcess(ctx, e.NetNS, filepath.Dir(m.Dir), e.cfg.Binary, args...)
	if err != nil {
		return errors.Wrapf(err, "lab: start etcd member %s", m.Name)
	}
	e.mu.Lock()
	m.proc, m.paused = p, false
	m.starts++
	e.mu.Unlock()
	return nil
}

// Kill kills member i with SIGKILL (a crash: nothing is flushed or said to the peers)
// and waits until it is gone. Killing a dead member is not an error.
func (e *Etcd) Kill(i int) error {
	e.mu.Lock()
	m := e.Members[i]
	p := m.proc
	m.paused = false
	e.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Kill()
}

// Start restarts members on their data (after Kill) and waits until each serves with a
// leader (members that form a quorum only together must be started in one call).
// Starting a running member is an error.
func (e *Etcd) Start(ctx context.Context, idx ...int) error {
	for _, i := range idx {
		e.mu.Lock()
		m := e.Members[i]
		running := m.proc != nil && !isDone(m.proc.Done())
		e.mu.Unlock()
		if running {
			return errors.Wrapf(ErrConfig, "etcd member %s is running", m.Name)
		}
		if err := e.startMember(ctx, m); err != nil {
			return err
		}
	}
	for _, i := range idx {
		if err := e.waitMember(ctx, e.Members[i]); err != nil {
			return err
		}
	}
	return nil
}

// Pause stops member i with SIGSTOP: it keeps its connections but answers nothing, as a
// member stuck on a full disk or a frozen VM would. Resume continues it.
func (e *Etcd) Pause(i int) error { return e.signal(i, syscall.SIGSTOP, true) }

// Resume continues a paused member (SIGCONT).
func (e *Etcd) Resume(i int) error { return e.signal(i, syscall.SIGCONT, false) }

func (e *Etcd) signal(i int, sig syscall.Signal, paused bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.Members[i]
	if m.proc == nil || isDone(m.proc.Done()) {
		return errors.Wrapf(ErrConfig, "etcd member %s is not running", m.Name)
	}
	if err := syscall.Kill(m.proc.PID(), sig); err != nil {
		return errors.Wrapf(err, "lab: signal %v to etcd member %s (pid %d)", sig, m.Name, m.proc.PID())
	}
	m.paused = paused
	return nil
}

// Running reports whether member i runs (paused or not).
func (e *Etcd) Running(i int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.Members[i].proc
	return p != nil && !isDone(p.Done())
}

// Leader returns the index of the member the running members name as their leader (-1
// when none names one).
func (e *Etcd) Leader(ctx context.Context) (int, error) {
	byID := map[uint64]int{}
	var leader uint64
	for _, m := range e.Members {
		if !e.Running(m.Index) || e.isPaused(m.Index) {
			continue
		}
		st, err := e.status(ctx, m)
		if err != nil {
			continue
		}
		byID[st.ID] = m.Index
		if st.Leader != 0 {
			leader = st.Leader
		}
	}
	if i, ok := byID[leader]; ok && leader != 0 {
		return i, nil
	}
	return -1, nil
}

func (e *Etcd) isPaused(i int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.Members[i].paused
}

// WaitHealthy waits until every running, unpaused member serves with a leader.
func (e *Etcd) WaitHealthy(ctx context.Context) error {
	for _, m := range e.Members {
		if !e.Running(m.Index) || e.isPaused(m.Index) {
			continue
		}
		if err := e.waitMember(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// waitMember waits until m answers a status request naming a leader.
func (e *Etcd) waitMember(ctx context.Context, m *EtcdMember) error {
	var last error
	for {
		e.mu.Lock()
		p := m.proc
		e.mu.Unlock()
		if isDone(p.Done()) {
			return errors.Wrapf(ErrNotReady, "lab: etcd member %s exited (%v); see %s", m.Name, p.Err(), p.LogPath)
		}
		st, err := e.status(ctx, m)
		if err == nil && st.Leader != 0 {
			return nil
		}
		last = err
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Wrapf(ErrNotReady, "lab: etcd member %s not ready: %v (last: %v); see %s", m.Name, ctx.Err(), last, p.LogPath)
		case <-t.C:
		}
	}
}

type memberStatus struct {
	ID, Leader uint64
}

// status asks one member (and only it) for its status, within 2 s.
func (e *Etcd) status(ctx context.Context, m *EtcdMember) (memberStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return memberStatus{}, errors.Wrapf(err, "lab: etcd client of %s", m.Name)
	}
	defer cli.Close()
	st, err := cli.Status(ctx, m.ClientURL)
	if err != nil {
		return memberStatus{}, errors.Wrapf(err, "lab: status of etcd member %s", m.Name)
	}
	return memberStatus{ID: st.Header.MemberId, Leader: st.Leader}, nil
}
