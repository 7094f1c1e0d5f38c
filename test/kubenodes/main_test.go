package kubenodes

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/demo"
	"github.com/coil-net/coil/lab/kubelab"
)

// The cluster every test of the package shares (starting one costs about a minute):
// two kubelet nodes with Coil installed from deploy/. Tests run in file order; the ones
// that break a node on purpose put it back, and TestNodeDeleted, which removes n2, runs
// last.
var (
	cluster  *kubelab.Cluster
	repo     string
	notReady string // why the cluster could not start (a skip outside CI)
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	ctx := context.Background()
	root, ok := testutil.RepoRoot()
	if !ok {
		fmt.Fprintln(os.Stderr, "kubenodes: repository root not found")
		return 1
	}
	repo = root
	if os.Geteuid() != 0 {
		notReady = "needs root"
		return m.Run()
	}
	bin, err := os.MkdirTemp("", "coil-kubenodes-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(bin) }()
	if err50 := buildBinaries(ctx, bin); err50 != nil {
		fmt.Fprintf(os.Stderr, "%+v\n", err50)
		return 1
	}
	kit := kubelab.DefaultKit(bin)
	if err55 := kit.Check(); err55 != nil {
		notReady = err55.Error()
		return m.Run()
	}
	images, err := kubelab.LoadImages(filepath.Join(repo, "bin", "images"))
	if err != nil {
		notReady = err.Error()
		return m.Run()
	}
	_, _ = lab.Sweep(ctx, "kn")
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("COIL_KUBELAB_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	t0 := time.Now()
	c, err := kubelab.Start(ctx, kubelab.Config{Name: "kn", Nodes: 2, Kit: kit, Images: images, Logger: logger})
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubenodes: start the cluster: %+v\n", err)
		return 1
	}
	stop := c.Lab.CloseOnSignal()
	defer func() {
		stop()
		if err := c.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "kubenodes: close: %+v\n", err)
		}
	}()
	if _, err := c.Coilctl(ctx, "pool", "create", "default", "10.100.0.0/16", "--block-size-bits", "5"); err != nil {
		fmt.Fprintf(os.Stderr, "kubenodes: %+v\n", err)
		return 1
	}
	if err := c.InstallCoil(ctx, kubelab.CoilOptions{DeployDir: filepath.Join(repo, "deploy")}); err != nil {
		fmt.Fprintf(os.Stderr, "kubenodes: install Coil: %+v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "kubenodes: cluster with Coil ready in %s\n", time.Since(t0).Round(time.Millisecond))
	cluster = c
	return m.Run()
}

// buildBinaries builds coilctl (the tests' view of the log) and etcd (the control plane's).
func buildBinaries(ctx context.Context, dir string) error {
	if err := demo.BuildBinaries(ctx, dir); err != nil {
		return err
	}
	return kubelab.BuildEtcd(ctx, dir)
}

// need returns the shared cluster, or fails (CI) or skips the test loudly when the
// cluster could not be prepared.
func need(t *testing.T) *kubelab.Cluster {
	t.Helper()
	if cluster != nil {
		return cluster
	}
	msg := notReady
	if msg == "" {
		msg = "cluster not started"
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("TEST NOT RUN: %s", msg)
	}
	t.Skipf("SKIPPED (not a pass): %s", msg)
	return nil
}
