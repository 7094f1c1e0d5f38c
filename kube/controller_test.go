package kube_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/kube/kubetest"
)

// The coil-controller binary runs against the API server and etcd, becomes leader, and
// serves every metric docs/metrics.md lists for it (and no undocumented coil_ metric).
func TestControllerMetricsDocumented(t *testing.T) {
	s := kubetest.Start(t)
	bin := filepath.Join(t.TempDir(), "coil-controller")
	if err := gobuild.Build(context.Background(), bin, "./cmd/coil-controller", false); err != nil {
		t.Fatalf("build coil-controller: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cmd := exec.Command(bin, "--kubeconfig", s.Kubeconfig, "--etcd-endpoints", strings.Join(s.Etcd.Endpoints(), ","),
		"--leader-election-namespace", "kube-system", "--identity", "ctl-test", "--metrics-addr", addr,
		"--leader-election-lease-duration", "3s", "--leader-election-renew-deadline", "2s", "--leader-election-retry-period", "200ms")
	cmd.Stdout, cmd.Stderr = testutil.LogWriter{T: t}, testutil.LogWriter{T: t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Signal(os.Interrupt); <-exited })
	ctx := context.Background()
	cs := s.Client(t)
	testutil.Eventually(t, 60*time.Second, func() bool {
		l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, "coil-controller", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "ctl-test"
	}, "coil-controller holds the leader Lease")
	var text string
	testutil.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/metrics") //nolint:noctx // test
		if err != nil {
			return false
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		text = string(b)
		return strings.Contains(text, "\ncoil_controller_leader 1\n")
	}, "coil_controller_leader 1 scraped")
	testutil.CheckDocumented(t, text, testutil.DocumentedMetrics(t, "coil-controller"))
}
