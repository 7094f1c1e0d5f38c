package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/testutil"
)

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "coil-pause")
	if err := gobuild.Build(context.Background(), bin, "./cmd/coil-pause", true); err != nil {
		t.Fatal(err)
	}
	return bin
}

func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("coil-pause did not exit within 10s of the signal")
		return -1
	}
}

// It runs until SIGTERM or SIGINT and then exits 0; -v prints the version.
func TestPauseSignals(t *testing.T) {
	bin := build(t)
	out, err := exec.Command(bin, "-v").Output()
	if err != nil || !strings.HasPrefix(string(out), "coil-pause ") {
		t.Fatalf("-v: %q %v", out, err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(bin)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err = cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The warning comes once the handlers are installed (before that the Go
		// runtime's default would kill it, which must not count as a pass or a fail).
		line, err := bufio.NewReader(stderr).ReadString('\n')
		if err != nil || !strings.Contains(line, "not PID 1") {
			t.Fatalf("first stderr line %q %v", line, err)
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		if code := waitExit(t, cmd); code != 0 {
			t.Errorf("exit code %d after %v, want 0", code, sig)
		}
	}
}

// sigCaught tells whether process pid has a handler for sig (SigCgt in its status).
func sigCaught(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// As PID 1 of a PID namespace it reaps orphans: a process whose parent died is
// re-parented to it and, once killed, must not stay a zombie.
func TestPauseReapsOrphansAsPID1(t *testing.T) {
	testutil.RequireRoot(t)
	nsenter := testutil.RequireCommand(t, "nsenter")
	bin := build(t)
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pause := cmd.Process.Pid
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	testutil.Eventually(t, 5*time.Second, func() bool { return sigCaught(pause, syscall.SIGCHLD) }, "coil-pause handles SIGCHLD")

	// A shell in pause's PID namespace starts sleep in the background and exits: sleep
	// is orphaned and re-parented to pause (PID 1 there).
	if out, err := exec.Command(nsenter, "-t", strconv.Itoa(pause), "-p", "--", "sh", "-c", "sleep 1000 >/dev/null 2>&1 &").CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	var orphan int
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pause) + "/task/" + strconv.Itoa(pause) + "/children")
		if f := strings.Fields(string(b)); len(f) == 1 {
			orphan, _ = strconv.Atoi(f[0])
		}
		return orphan > 0
	}, "sleep re-parented to coil-pause")
	if err := syscall.Kill(orphan, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(orphan))
		return err != nil // gone: reaped (unreaped, it stays a zombie)
	}, "the killed orphan %d reaped by coil-pause (not reaped, it stays a zombie)", orphan)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}
