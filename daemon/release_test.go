package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/cli"
)

// coilctl runs coilctl in-process against the env's etcd, without Kubernetes access
// (no kubeconfig, not in a pod).
func (e *env) coilctl(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = cli.Main(ctx, append([]string{"--etcd-endpoints", strings.Join(e.etcd.Endpoints(), ","), "--timeout", "20s"}, args...), cli.Env{
		Stdout: &out, Stderr: &errb,
		Getenv: func(k string) string {
			if k == "USER" {
				return "tester"
			}
			return ""
		},
	})
	return out.String(), errb.String(), code
}

func (e *env) registrations() int {
	n := 0
	for _, ev := range e.nodeEvents() {
		if _, ok := ev.Payload.(*events.NodeRegistered); ok {
			n++
		}
	}
	return n
}

// TestOperatorReleaseUnderLiveCoild (issue 14, item 7): `coilctl address release` appends
// AddressReleased to the node stream of a coild that is alive and busy with ADDs. The
// coild takes the event in (on a conflict or from its watch), drops the attachment,
// deletes its veth and /32 routes at once (not at the next --reconcile-interval: it is
// an hour here), and keeps serving in the same session: no new lease, no new
// registration, no "rewritten" reload.
func TestOperatorReleaseUnderLiveCoild(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	cfg := e.config()
	cfg.ReconcileEvery = time.Hour
	e.startDaemon(cfg)
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	add := func(id string) ([]netip.Addr, error) {
		_, path := e.pod(id)
		res, err := c.AddNetworkList(ctx, list, podRT(id, path))
		if err != nil {
			return nil, err
		}
		return addrsOf(t, res), nil
	}
	keep, err := add("keep0001")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := add("gone0001")
	if err != nil {
		t.Fatal(err)
	}
	lease, regs := e.aliveLease(), e.registrations()

	// ADDs race with the release: coild's appends and coilctl's conflict.
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := add(fmt.Sprintf("race%04d", i)); err != nil {
				errs <- err
			}
		}()
	}
	out, stderr, code := e.coilctl("address", "release", gone[1].String(), "--reason", "pod gone", "--force", "--yes")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("ADD during the release: %v", err)
	}
	if code != 0 || stderr != "" {
		t.Fatalf("address release: exit %d, stderr %q", code, stderr)
	}
	want := fmt.Sprintf("released %s,%s on node %s (container gone0001, interface eth0, pod default/web-gone0001)\n", gone[0], gone[1], nodeName)
	if out != want {
		t.Errorf("address release printed %q, want %q", out, want)
	}
	rel := e.released("gone0001")
	if len(rel) != 1 || !strings.HasPrefix(rel[0].Reason, "forced (no Kubernetes access") || !strings.HasSuffix(rel[0].Reason, "): pod gone") {
		t.Fatalf("AddressReleased of gone0001: %+v", rel)
	}
	if !slices.Equal(rel[0].Addrs, gone) {
		t.Errorf("released %v, want both families %v", rel[0].Addrs, gone)
	}

	// The kernel follows: gone0001's veth and routes go, everything else stays.
	e.waitConverged()
	if !slices.Contains(veths(t, e.nodeNS), hostVeth("keep0001")) {
		t.Fatal("keep0001's veth went too")
	}
	routes := coilHostRoutes(t, e.nodeNS)
	for _, a := range keep {
		if !slices.Contains(routes, a.String()+" dev "+hostVeth("keep0001")) {
			t.Errorf("keep0001's route to %s went too: %v", a, routes)
		}
	}
	e.expectNoLeak("gone0001")

	// coild keeps serving, in the same session.
	if _, err := add("after001"); err != nil {
		t.Fatalf("ADD after the release: %v", err)
	}
	if l, r := e.aliveLease(), e.registrations(); l != lease || r != regs {
		t.Errorf("lease %x → %x, registrations %d → %d: the release started a new session", lease, l, regs, r)
	}
	e.waitConverged()
}
