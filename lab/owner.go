package lab

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/cockroachdb/errors"
)

// OwnerDir holds one record per live lab ("<name>": "<pid> <start time>"), written before
// the lab creates anything. Sweep uses it to tell a crashed lab from a running one.
const OwnerDir = "/run/coillab"

func (l *Lab) writeOwner() error {
	if err := os.MkdirAll(OwnerDir, 0o755); err != nil {
		return errors.Wrap(err, "lab: owner dir")
	}
	path := filepath.Join(OwnerDir, l.Name)
	st, err := procStart(os.Getpid())
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if os.IsExist(err) {
			if alive, _ := ownerAlive(l.Name); alive {
				return errors.Wrapf(ErrConfig, "lab name %q is in use by a running lab", l.Name)
			}
			// A stale record of a crashed lab: take it over.
			f, err = os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o644)
		}
		if err != nil {
			return errors.Wrap(err, "lab: owner record")
		}
	}
	_, err = fmt.Fprintf(f, "%d %s\n", os.Getpid(), st)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return errors.Wrap(err, "lab: owner record")
	}
	l.ownerFile = path
	return nil
}

// procStart returns the start time of a process (field 22 of /proc/PID/stat), which tells
// a live owner from a recycled PID.
func procStart(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", errors.Wrap(err, "lab: read process start time")
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", errors.Newf("lab: odd /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", errors.Newf("lab: odd /proc/%d/stat", pid)
	}
	return f[19], nil
}

// ownerAlive reports whether the lab named name has a live owner process.
func ownerAlive(name string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(OwnerDir, name))
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, errors.Wrap(err, "lab: read owner record")
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false, nil
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false, nil
	}
	st, err := procStart(pid)
	if err != nil {
		return false, nil //nolint:nilerr // no such process: the owner is gone
	}
	return st == f[1], nil
}

// Sweep removes what crashed labs left behind: every namespace named "coillab-<name>-..."
// whose lab name starts with namePrefix ("" matches all) and whose owner process is gone,
// after killing (by PID) the processes still inside those namespaces, which only a lab
// started; then it removes the temporary work directories of labs without a live owner
// and the stale owner records. Before the namespaces, it kills every process in the
// cgroups "coillab-<name>-*" of those labs (NewCgroup: kubelet nodes, their pods and
// shims) and removes the cgroups. Labs whose owner is alive, such as
// another test's, are never touched. It returns the namespaces it removed.
func Sweep(ctx context.Context, namePrefix string) ([]string, error) {
	out, err := run(ctx, nil, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var removed []string
	dead := map[string]bool{}
	labDead := func(name string) bool {
		d, known := dead[name]
		if !known {
			alive, aerr := ownerAlive(name)
			if aerr != nil {
				return false
			}
			d = !alive
			dead[name] = d
		}
		return d
	}
	// Kubelet nodes' cgroups first: their pods and shims live in no lab namespace.
	err = sweepCgroups(ctx, namePrefix, labDead)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], Prefix+namePrefix) {
			continue
		}
		ns := f[0]
		name, _, ok := strings.Cut(strings.TrimPrefix(ns, Prefix), "-")
		if !ok {
			continue
		}
		isDead, known := dead[name]
		if !known {
			alive, aerr := ownerAlive(name)
			if aerr != nil {
				err = errors.CombineErrors(err, aerr)
				continue
			}
			isDead = !alive
			dead[name] = isDead
		}
		if !isDead {
			continue
		}
		if pids, perr := run(ctx, nil, "ip", "netns", "pids", ns); perr == nil {
			for _, p := range strings.Fields(string(pids)) {
				if pid, aerr := strconv.Atoi(p); aerr == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if _, derr := run(ctx, nil, "ip", "netns", "del", ns); derr != nil {
			err = errors.CombineErrors(err, derr)
			continue
		}
		removed = append(removed, ns)
	}
	// Temporary work directories ("$TMPDIR/coillab-<name>-<random>", made when the lab was
	// given no Dir: BIRD's and coild's files, etcd data) of labs without a live owner, also
	// of labs whose namespaces were already gone.
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+namePrefix+"*"))
	for _, d := range dirs {
		base := strings.TrimPrefix(filepath.Base(d), Prefix)
		i := strings.LastIndexByte(base, '-')
		if i <= 0 || !allDigits(base[i+1:]) { // not os.MkdirTemp's "<prefix><random>"
			continue
		}
		if fi, serr := os.Lstat(d); serr != nil || !fi.IsDir() {
			continue
		}
		name := base[:i]
		isDead, known := dead[name]
		if !known {
			alive, aerr := ownerAlive(name)
			if aerr != nil {
				continue
			}
			isDead = !alive
			dead[name] = isDead
		}
		if isDead {
			_ = os.RemoveAll(d)
		}
	}
	for name, isDead := range dead {
		if isDead {
			_ = os.Remove(filepath.Join(OwnerDir, name))
		}
	}
	return removed, err
}

// Signals returns a context cancelled on SIGINT or SIGTERM, for programs (the demo) whose
// main goroutine waits on it and then calls Lab.Close. Tests use CloseOnSignal instead.
func Signals(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// CloseOnSignal closes the lab when the process gets SIGINT or SIGTERM, then re-raises the
// signal so the process ends as it would have (a test binary's Ctrl-C otherwise skips
// t.Cleanup and leaves namespaces behind). stop undoes it; call it after Close.
func (l *Lab) CloseOnSignal() (stop func()) {
	ch := make(chan os.Signal, 1)
	quit := make(chan struct{})
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-ch:
			l.log.Warn("signal: closing lab", "signal", sig)
			_ = l.Close()
			signal.Stop(ch)
			if s, ok := sig.(syscall.Signal); ok {
				_ = syscall.Kill(os.Getpid(), s)
			}
		case <-quit:
		}
	}()
	return func() {
		signal.Stop(ch)
		select {
		case <-quit:
		default:
			close(quit)
		}
	}
}

func allDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
