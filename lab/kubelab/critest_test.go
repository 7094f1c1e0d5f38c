package kubelab

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab"
)

// critestFocus selects cri-tools' Networking tests and its PodSandbox tests.
const critestFocus = `\[k8s\.io\] (Networking|PodSandbox)`

// critestSkip lists the tests that cannot apply here, with the reason in docs/kubernetes.md
// ("critest").
const critestSkip = `runtime should support listing pod sandbox metrics`

// TestCritestOnCoilNode runs cri-tools' validation suite (critest), focused on its
// Networking and PodSandbox tests, against containerd on a node whose CNI is Coil.
func TestCritestOnCoilNode(t *testing.T) {
	kit, images := requireRuntimeKit(t)
	for _, b := range []string{"coil", "coild", "coilctl"} {
		if _, err := os.Stat(kit.Bin(b)); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("TEST NOT RUN: %v (make build)", err)
			}
			t.Skipf("SKIPPED (not a pass): %v (make build)", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Nodes: 1, Kit: kit, Images: images, RuntimeOnly: true, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	stop := c.Lab.CloseOnSignal()
	t.Cleanup(func() {
		stop()
		if err41 := c.Close(); err41 != nil {
			t.Errorf("Close: %+v", err41)
		}
	})
	n := c.Nodes[0]
	portmap := testutil.RequireCommand(t, "portmap")
	pc, err := n.StartPlainCoil(ctx, "10.130.0.0/16", portmap)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	// cri-tools' default images (busybox, nginx) cannot be pulled here: the test image of
	// `make images` stands in for both (critest-images.yaml).
	out, err := n.Exec(ctx, kit.Node("critest"), "--runtime-endpoint", "unix://"+ContainerdSocket,
		"--test-images-file", images.CritestImages, "--ginkgo.focus", critestFocus, "--ginkgo.skip", critestSkip,
		"--ginkgo.no-color", "--ginkgo.v")
	t.Logf("critest:\n%s", lastLinesOf(string(out), 60))
	if err != nil {
		t.Fatalf("critest failed: %v\ncoild log:\n%s", err, lab.Tail(pc.Coild.LogPath, 40))
	}
	if !strings.Contains(string(out), "SUCCESS!") {
		t.Errorf("critest did not report SUCCESS")
	}
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
