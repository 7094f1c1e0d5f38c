package lab

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
)

// Cgroup is a cgroup a lab made for one of its nodes, "coillab-<lab>-<node>" at the root
// of every cgroup v1 hierarchy (cpu, memory, pids, name=systemd, ...). A kubelet node puts
// its containerd and kubelet in it and uses it as the kubelet's cgroupRoot, so every
// process of the node (pods and shims included) is found, killed and its cgroups removed
// at Close, or by Sweep after a crash.
type Cgroup struct {
	// Name is the path under each hierarchy's root, without a leading slash.
	Name string
	// Dirs is the cgroup's directory in each hierarchy.
	Dirs []string
}

// Hierarchies lists the mount points of the cgroup v1 hierarchies (from
// /proc/self/mountinfo), sorted. On a host with only cgroup v2 it is empty.
func Hierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, errors.Wrap(err, "lab: read mountinfo")
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(sf) < 1 || sf[0] != "cgroup" || pf[3] != "/" {
			continue
		}
		if !slices.Contains(out, pf[4]) {
			out = append(out, pf[4])
		}
	}
	slices.Sort(out)
	return out, errors.Wrap(sc.Err(), "lab: read mountinfo")
}

// NewCgroup creates the cgroup "coillab-<lab>-<node>" in every cgroup v1 hierarchy (cpuset
// gets its parent's cpus and mems) and records it for Close, which kills every process left
// in it and removes it with all the cgroups made below it.
func (l *Lab) NewCgroup(node string) (*Cgroup, error) {
	hs, err := Hierarchies()
	if err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, errors.Wrap(ErrConfig, "lab: no cgroup v1 hierarchy mounted (kubelet nodes need cgroup v1 here; see docs/kubernetes.md)")
	}
	cg := &Cgroup{Name: Prefix + l.Name + "-" + node}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	l.cgroups = append(l.cgroups, cg)
	l.mu.Unlock()
	for _, h := range hs {
		d := filepath.Join(h, cg.Name)
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return nil, errors.Wrapf(err, "lab: create cgroup %s", d)
		}
		cg.Dirs = append(cg.Dirs, d)
		if _, serr := os.Stat(filepath.Join(h, "cpuset.cpus")); serr == nil {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return nil, errors.Wrapf(err, "lab: read %s", filepath.Join(h, f))
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return nil, errors.Wrapf(err, "lab: write %s", filepath.Join(d, f))
				}
			}
		}
	}
	return cg, nil
}

// Sub creates the child cgroup name (e.g. "runtime") in every hierarchy and returns the
// paths of its cgroup.procs files: a process joins it by writing its PID to each.
func (c *Cgroup) Sub(name string) ([]string, error) {
	var procs []string
	for _, d := range c.Dirs {
		sd := filepath.Join(d, name)
		if err := os.Mkdir(sd, 0o755); err != nil && !os.IsExist(err) {
			return nil, errors.Wrapf(err, "lab: create cgroup %s", sd)
		}
		if _, serr := os.Stat(filepath.Join(d, "cpuset.cpus")); serr == nil {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(d, f))
				if err != nil {
					return nil, errors.Wrap(err, "lab: read cpuset")
				}
				if err := os.WriteFile(filepath.Join(sd, f), b, 0o644); err != nil {
					return nil, errors.Wrap(err, "lab: write cpuset")
				}
			}
		}
		procs = append(procs, filepath.Join(sd, "cgroup.procs"))
	}
	return procs, nil
}

// PIDs lists the processes in the cgroup and below it (any hierarchy).
func (c *Cgroup) PIDs() []int {
	seen := map[int]bool{}
	for _, d := range c.Dirs {
		for _, p := range cgroupPIDs(d) {
			seen[p] = true
		}
	}
	out := make([]int, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// remove kills (SIGKILL, by PID) every process in the cgroup and below, waits until they
// are gone and removes the cgroup directories bottom-up. A cgroup already gone is no error.
func (c *Cgroup) remove(ctx context.Context) error {
	return removeCgroupDirs(ctx, c.Dirs)
}

func removeCgroupDirs(ctx context.Context, dirs []string) error {
	for {
		var pids []int
		for _, d := range dirs {
			pids = append(pids, cgroupPIDs(d)...)
		}
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return errors.Wrapf(ctx.Err(), "lab: processes %v left in cgroups %v", pids, dirs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	// A killed process leaves cgroup.procs at once but keeps its cgroup busy (rmdir:
	// EBUSY) until its parent reaps it, which the parent may do a moment later: retry
	// for a bounded time.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		busy := false
		for _, d := range dirs {
			if rerr := rmdirTree(d); rerr != nil {
				err = errors.CombineErrors(err, rerr)
				busy = busy || errors.Is(rerr, syscall.EBUSY)
			}
		}
		if err == nil || !busy || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.CombineErrors(err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cgroupPIDs reads cgroup.procs of dir and of every cgroup below it.
func cgroupPIDs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || !de.IsDir() {
			return nil //nolint:nilerr // a cgroup removed meanwhile
		}
		b, rerr := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if rerr != nil {
			return nil //nolint:nilerr // idem
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, aerr := strconv.Atoi(f); aerr == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// rmdirTree removes a cgroup directory and its child cgroups, deepest first (a cgroup's
// files cannot be removed, only empty cgroup directories).
func rmdirTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var err error
	for i := len(dirs) - 1; i >= 0; i-- {
		if rerr := syscall.Rmdir(dirs[i]); rerr != nil && !errors.Is(rerr, syscall.ENOENT) {
			err = errors.CombineErrors(err, errors.Wrapf(rerr, "lab: remove cgroup %s", dirs[i]))
		}
	}
	return err
}

// sweepCgroups removes the cgroups "coillab-<name>-*" of the dead labs (their processes
// killed first).
func sweepCgroups(ctx context.Context, namePrefix string, isDead func(name string) bool) error {
	hs, err := Hierarchies()
	if err != nil {
		return err
	}
	byName := map[string][]string{} // cgroup name -> dirs
	for _, h := range hs {
		ents, _ := os.ReadDir(h)
		for _, e := range ents {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), Prefix+namePrefix) {
				continue
			}
			name, _, ok := strings.Cut(strings.TrimPrefix(e.Name(), Prefix), "-")
			if !ok || !isDead(name) {
				continue
			}
			byName[e.Name()] = append(byName[e.Name()], filepath.Join(h, e.Name()))
		}
	}
	for _, dirs := range byName {
		if rerr := removeCgroupDirs(ctx, dirs); rerr != nil {
			err = errors.CombineErrors(err, rerr)
		}
	}
	return err
}
