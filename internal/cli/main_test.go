package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

// env is a real etcd plus what a test needs to drive coilctl and node allocators.
type env struct {
	t    *testing.T
	etcd *etcdtest.Cluster
	cli  *clientv3.Client
	log  *events.EtcdLog
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := etcdtest.Start(t)
	cl := c.Client(t)
	lg := events.NewEtcdLog(cl, events.EtcdConfig{})
	t.Cleanup(func() { _ = lg.Close() })
	return &env{t: t, etcd: c, cli: cl, log: lg}
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs coilctl in-process against the env's etcd.
func (e *env) run(args ...string) result {
	e.t.Helper()
	all := append([]string{"--etcd-endpoints", strings.Join(e.etcd.Endpoints(), ","), "--timeout", "20s"}, args...)
	return runArgs(e.t, all...)
}

func runArgs(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := cli.Main(ctx, args, cli.Env{
		Stdout: &out, Stderr: &errb, Clock: fixedClock{t0},
		Getenv: func(k string) string {
			if k == "USER" {
				return "tester"
			}
			return ""
		},
	})
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// ok runs coilctl and fails the test unless it exits 0 with nothing on stderr.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 || r.stderr != "" {
		e.t.Fatalf("coilctl %s: exit %d, stderr %q, stdout %q", strings.Join(args, " "), r.code, r.stderr, r.stdout)
	}
	return r.stdout
}

// fails runs coilctl and checks the exit code and that stderr is one "coilctl: " line
// containing every want.
func (e *env) fails(code int, args []string, want ...string) result {
	e.t.Helper()
	r := e.run(args...)
	checkFail(e.t, r, code, args, want...)
	return r
}

func checkFail(t *testing.T, r result, code int, args []string, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("coilctl %s: exit %d, want %d (stderr %q)", strings.Join(args, " "), r.code, code, r.stderr)
		return
	}
	if !strings.HasPrefix(r.stderr, "coilctl: ") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("coilctl %s: stderr %q, want one line starting with \"coilctl: \"", strings.Join(args, " "), r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("coilctl %s: stderr %q does not contain %q", strings.Join(args, " "), r.stderr, w)
		}
	}
	if r.stdout != "" {
		t.Errorf("coilctl %s failed but wrote to stdout: %q", strings.Join(args, " "), r.stdout)
	}
}

// startNode runs a node allocator fenced on a live lease, as coild does. It returns the
// allocator and a function that kills the node (stops it and revokes its lease).
func (e *env) startNode(name string) (*allocator.Node, func()) {
	e.t.Helper()
	n := allocatortest.Start(e.t, e.cli, e.log, name, allocatortest.Options{Clock: fixedClock{t0}})
	e.t.Cleanup(n.Kill)
	return n.Node, n.Kill
}

func (e *env) alloc(n *allocator.Node, id, pool, pod string) *allocator.Assignment {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := n.Allocate(ctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: pool, PodNamespace: "ns", PodName: pod})
	if err != nil {
		e.t.Fatalf("Allocate(%s): %v", id, err)
	}
	return a
}

// lines splits output into lines, each with its fields.
func lines(s string) [][]string {
	var out [][]string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		out = append(out, strings.Fields(l))
	}
	return out
}

// wantHeader fails the test unless table's first line has the fields of header.
func wantHeader(t *testing.T, table, header string) {
	t.Helper()
	if got := strings.Join(lines(table)[0], " "); got != header {
		t.Fatalf("header = %q, want %q", got, header)
	}
}

// wantContains reports each of wants that out, the output of what, does not contain.
func wantContains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("%s: no %q in:\n%s", what, want, out)
		}
	}
}

// row finds the table row whose first field is key.
func row(t *testing.T, out, key string) []string {
	t.Helper()
	for _, f := range lines(out) {
		if len(f) > 0 && f[0] == key {
			return f
		}
	}
	t.Fatalf("no row %q in\n%s", key, out)
	return nil
}

// noSkipNB makes `pool create` hand out the network and broadcast addresses, as pools
// made before the option did: the fixtures' logs, addresses and event counts predate it.
const noSkipNB = "--skip-network-broadcast=false"
