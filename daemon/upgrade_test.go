package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/internal/testutil"
)

// oldCoild builds cmd/coild of the commit before feature levels (the parent of the commit
// that added events/level.go) from `git archive` into a temporary tree, offline with the
// module cache, and caches the binary by commit in the user's cache directory.
func oldCoild(t *testing.T) (bin, commit string) {
	t.Helper()
	testutil.RequireCommand(t, "git")
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git work tree (%v): the upgrade test needs the history to build the release before feature levels", err)
	}
	top := strings.TrimSpace(string(root))
	if sh, _ := exec.Command("git", "-C", top, "rev-parse", "--is-shallow-repository").Output(); strings.TrimSpace(string(sh)) == "true" {
		t.Skip("a shallow clone: the upgrade test builds coild from the commit before feature levels, which it lacks (git fetch --unshallow)")
	}
	out, err := exec.Command("git", "-C", top, "log", "--diff-filter=A", "--format=%H", "--", "events/level.go").Output()
	if err != nil {
		t.Fatalf("git log: %v", err)
	}
	first := strings.Fields(string(out))
	if len(first) == 0 {
		t.Fatal("no commit added events/level.go")
	}
	c, err := exec.Command("git", "-C", top, "rev-parse", first[len(first)-1]+"^").Output()
	if err != nil {
		t.Fatalf("parent of %s: %v", first[len(first)-1], err)
	}
	commit = strings.TrimSpace(string(c))
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(cache, "coil", "old-coild", commit, "coild")
	if _, serr := os.Stat(bin); serr == nil {
		return bin, commit
	}
	src := t.TempDir()
	archive := exec.Command("git", "-C", top, "archive", commit)
	untar := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	untar.Stdin = pipe
	var stderr bytes.Buffer
	archive.Stderr, untar.Stderr = &stderr, &stderr
	if err := untar.Start(); err != nil {
		t.Fatal(err)
	}
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s: %v: %s", commit, err, stderr.String())
	}
	if err := untar.Wait(); err != nil {
		t.Fatalf("tar: %v: %s", err, stderr.String())
	}
	tmp := bin + ".tmp"
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", tmp, "./cmd/coild")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOPROXY=off")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build coild of %s: %v: %s", commit, err, b)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin, commit
}

// startCoildBin runs the coild binary bin as node in e's node namespace and waits for it
// to be ready unless wait is false. It is stopped (SIGTERM, by PID) at the end of the test.
func (e *env) startCoildBin(bin, node string, wait bool) *testutil.Proc {
	e.t.Helper()
	p := e.startIn(e.nodeNS, fmt.Sprintf("coild %s (%s)", node, bin), bin,
		"--node", node, "--etcd-endpoints", e.etcd.Endpoints()[0], "--socket", e.sock, "--state-dir", e.stateDir,
		"--metrics-addr", "", "--lease-ttl", "3s", "--reconcile-interval", "200ms")
	if wait {
		e.waitReady()
	}
	return p
}

// A rolling upgrade: a coild of the release before feature levels keeps serving while a
// coild and coilctl of this release run beside it; the cluster's feature level, and with
// it every feature that needs it, stays off until the old coild is replaced. After the
// raise, the new coild keeps serving, and the old release refuses to start (it stops at
// the first event it cannot read) instead of misreading the log.
func TestRollingUpgrade(t *testing.T) {
	oldBin, commit := oldCoild(t)
	t.Logf("old coild: %s (commit %s)", oldBin, commit)
	e := newEnv(t)
	e.createPool("default", 4, "10.0.0.0/24")
	ctx := context.Background()

	oldNode := e.startCoildBin(oldBin, nodeName, true)
	// A second node, of this release, in-process.
	e2 := &env{t: t, etcd: e.etcd, cli: e.cli, log: e.log}
	e2.nodeNS, e2.nodePath = testutil.NetNS(t, "node2")
	dir, err := os.MkdirTemp("", "coild-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	e2.sockDir, e2.sock, e2.stateDir = dir, filepath.Join(dir, "coild.sock"), filepath.Join(t.TempDir(), "state")
	cfg := e2.config()
	cfg.Node = "n2"
	cfg.HostNetNS = e2.nodePath
	e2.startDaemon(cfg)

	add := func(e *env, id string) {
		t.Helper()
		_, podPath := e.pod("up")
		if _, err := e.cni().AddNetworkList(ctx, e.netList(), podRT(id, podPath)); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
	}
	add(e, "0ld00001")
	add(e2, "0e100001")

	// The levels as coilctl shows them; the raise and the features that need it are refused,
	// naming the old coild.
	out, stderr, code := e.coilctl("cluster", "version", "-o", "json")
	if code != 0 || !strings.Contains(out, `"behind": [`+"\n"+`    "n1"`) || !strings.Contains(out, `"legacy": true`) {
		t.Fatalf("cluster version: exit %d %s %s", code, out, stderr)
	}
	_, stderr, code = e.coilctl("cluster", "version", "raise")
	if code != cli.ExitRefused || !strings.Contains(stderr, "n1 (level 0: a release before feature levels)") {
		t.Fatalf("raise beside the old coild: exit %d, %s", code, stderr)
	}
	admin := &allocator.Admin{Log: e.log, Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.RequireLevel(ctx, events.Level1, "a level-1 feature"); !errors.Is(err, allocator.ErrLevel) {
		t.Fatalf("feature beside the old coild: %v", err)
	}
	// Operations of the old level go on, and the old coild reads them and keeps serving.
	if _, stderr, code = e.coilctl("pool", "create", "second", "10.0.1.0/24", "--block-size-bits", "4"); code != 0 {
		t.Fatalf("pool create: %s", stderr)
	}
	add(e, "0ld00002")
	add(e2, "0e100002")

	// Replace the old coild (the DaemonSet's rolling update does the same): stop it; its
	// liveness key goes with its lease.
	oldNode.Stop(t)
	var last string
	testutil.Eventually(t, 30*time.Second, func() bool {
		out, stderr, code = e.coilctl("cluster", "version", "raise")
		last = stderr
		return code == 0
	}, "raise once the old coild is gone (last: %s)", &last)
	if out != "cluster feature level raised from 0 to 1\n" {
		t.Fatalf("raise said %q", out)
	}
	if err := admin.RequireLevel(ctx, events.Level1, "a level-1 feature"); err != nil {
		t.Fatalf("feature after the raise: %v", err)
	}
	// The new coild read ClusterLevelRaised and still serves.
	add(e2, "0e100003")

	// The old release, started again, stops at the event it cannot read.
	again := e.startCoildBin(oldBin, nodeName, false)
	select {
	case <-again.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("the old coild runs on a log at level 1:\n%s", again.Out.String())
	}
	if again.Err() == nil || !strings.Contains(again.Out.String(), "type code 15") {
		t.Fatalf("the old coild on a level-1 log: %v\n%s", again.Err(), again.Out.String())
	}
}
