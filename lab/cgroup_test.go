package lab

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
)

func requireCgroupV1(t *testing.T) {
	t.Helper()
	hs, err := Hierarchies()
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("TEST NOT RUN: no cgroup v1 hierarchy")
		}
		t.Skip("SKIPPED (not a pass): no cgroup v1 hierarchy")
	}
}

// startCgroupLab starts a one-node IPv4 lab (cgroup v1 needed) and makes node n0's
// cgroup.
func startCgroupLab(t *testing.T) (*Lab, *Cgroup) {
	t.Helper()
	requireLab(t)
	requireCgroupV1(t)
	l := startLab(t, Config{Nodes: 1, DisableIPv6: true})
	cg, err := l.NewCgroup("n0")
	if err != nil {
		t.Fatal(err)
	}
	return l, cg
}

// joinCgroup starts `sleep 1000` in the given cgroup.procs files (a shell that joins them
// and execs sleep) and returns it.
func joinCgroup(t *testing.T, procs []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", `for f in $1; do echo $$ > "$f"; done; exec sleep 1000`, "sh", strings.Join(procs, " "))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	return cmd
}

// A node cgroup holds its processes; Close kills what is left in it (also below it) and
// removes every cgroup directory it made, in every hierarchy.
func TestCgroupClose(t *testing.T) {
	l, cg := startCgroupLab(t)
	if want := Prefix + l.Name + "-n0"; cg.Name != want {
		t.Errorf("cgroup name %q, want %q", cg.Name, want)
	}
	procs, err := cg.Sub("runtime")
	if err != nil {
		t.Fatal(err)
	}
	p := joinCgroup(t, procs)
	for _, d := range cg.Dirs {
		testutil.Eventually(t, 5*time.Second, func() bool {
			b, err := os.ReadFile(filepath.Join(d, "runtime", "cgroup.procs"))
			return err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(p.Process.Pid)
		}, "process %d in %s/runtime", p.Process.Pid, d)
	}
	if pids := cg.PIDs(); len(pids) != 1 || pids[0] != p.Process.Pid {
		t.Errorf("PIDs() = %v, want [%d]", pids, p.Process.Pid)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %+v", err)
	}
	if err := p.Process.Signal(os0()); err == nil {
		t.Errorf("process %d still alive after Close", p.Process.Pid)
	}
	for _, d := range cg.Dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left after Close (stat: %v)", d, err)
		}
	}
}

// Sweep kills the processes in a crashed lab's cgroups and removes the cgroups, but
// never a live lab's.
func TestSweepCgroups(t *testing.T) {
	live, liveCg := startCgroupLab(t)
	name := "sc" + live.Name[:6]
	fakeDeadOwner(t, name)
	hs, err := Hierarchies()
	if err != nil {
		t.Fatal(err)
	}
	var procs []string
	for _, h := range hs {
		d := filepath.Join(h, Prefix+name+"-n1", "kubepods")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(h, "cpuset.cpus")); err == nil {
			for _, sub := range []string{filepath.Dir(d), d} {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					b, _ := os.ReadFile(filepath.Join(h, f))
					if err := os.WriteFile(filepath.Join(sub, f), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		procs = append(procs, filepath.Join(d, "cgroup.procs"))
	}
	t.Cleanup(func() {
		for _, h := range hs {
			_ = rmdirTree(filepath.Join(h, Prefix+name+"-n1"))
		}
	})
	orphan := joinCgroup(t, procs)
	if _, err := Sweep(context.Background(), "sc"); err != nil {
		t.Fatalf("Sweep: %+v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return orphan.ProcessState != nil || orphan.Process.Signal(os0()) != nil },
		"the dead lab's pod process killed")
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, Prefix+name+"-n1")); !os.IsNotExist(err) {
			t.Errorf("cgroup of the dead lab left in %s (stat: %v)", h, err)
		}
	}
	if _, err := Sweep(context.Background(), live.Name); err != nil {
		t.Fatalf("Sweep: %+v", err)
	}
	for _, d := range liveCg.Dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("Sweep removed the live lab's cgroup %s: %v", d, err)
		}
	}
}

// A Forwarder relays a loopback port of the test's namespace to a server that listens
// only inside a node namespace.
func TestForwarder(t *testing.T) {
	requireLab(t)
	l := startLab(t, Config{Nodes: 1, DisableIPv6: true})
	n := l.Nodes[0]
	target := n.FabricAddr.String() + ":18080"
	ln, err := listenInNetNS(n.NetNSPath, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err168 := ln.Accept()
			if err168 != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	// (The address exists only in the node namespace; the test never sends anything to
	// it from its own namespace.)
	f, err := n.Forward(target)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	c, err := net.Dial("tcp", f.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err187 := c.Write([]byte("hello\n")); err187 != nil {
		t.Fatal(err187)
	}
	buf := make([]byte, 6)
	if _, err191 := io.ReadFull(c, buf); err191 != nil || string(buf) != "hello\n" {
		t.Fatalf("echo through the forwarder: %q %v", buf, err191)
	}
	dc, err := n.DialContext(context.Background(), "tcp", target)
	if err != nil {
		t.Fatalf("DialContext: %v", err)
	}
	_ = dc.Close()
}

// listenInNetNS opens a TCP listener inside a network namespace (test helper, the
// DialInNetNS technique).
func listenInNetNS(nsPath, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetNS(nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

func os0() os.Signal { return syscall.Signal(0) }
