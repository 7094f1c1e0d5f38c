package kubelab

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab"
)

func requireRuntimeKit(t *testing.T) (Kit, Images) {
	t.Helper()
	testutil.RequireRoot(t)
	root := testutil.Root(t)
	kit := DefaultKit(filepath.Join(root, "bin"))
	err := kit.check(false)
	var images Images
	if err == nil {
		images, err = LoadImages(filepath.Join(root, "bin", "images"))
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("TEST NOT RUN: %v", err)
		}
		t.Skipf("SKIPPED (not a pass): %v", err)
	}
	return kit, images
}

// A runtime-only node: containerd in the node's namespaces and cgroup, the images
// imported, and a pod sandbox started through CRI (crictl runp) gets its address from
// the CNI configuration in the node's own /etc/cni/net.d (ptp + host-local here). Close
// leaves no process, cgroup or namespace behind.
func TestRuntimeOnlyNode(t *testing.T) {
	kit, images := requireRuntimeKit(t)
	ptp := testutil.RequireCommand(t, "ptp")
	hostLocal := testutil.RequireCommand(t, "host-local")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Nodes: 1, Kit: kit, Images: images, RuntimeOnly: true, Dir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	stop := c.Lab.CloseOnSignal()
	closed := false
	t.Cleanup(func() {
		stop()
		if !closed {
			_ = c.Close()
		}
	})
	n := c.Nodes[0]
	for _, b := range []string{ptp, hostLocal} {
		data, err63 := os.ReadFile(b)
		if err63 != nil {
			t.Fatal(err63)
		}
		if err63 := os.WriteFile(filepath.Join(n.Dir, "cni-bin", filepath.Base(b)), data, 0o755); err63 != nil {
			t.Fatal(err63)
		}
	}
	conf := `{"cniVersion": "1.0.0", "name": "ptp", "plugins": [{"type": "ptp", "ipMasq": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.110.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`
	if err73 := os.WriteFile(filepath.Join(n.Dir, "cni-conf", "10-ptp.conflist"), []byte(conf), 0o644); err73 != nil {
		t.Fatal(err73)
	}
	out, err := n.Crictl(ctx, "images")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{images.Pause, images.Workload, images.Coil} {
		repo, _, _ := strings.Cut(ref, ":")
		if !strings.Contains(string(out), repo) {
			t.Errorf("image %s not in the node's containerd:\n%s", ref, out)
		}
	}
	sandbox := filepath.Join(t.TempDir(), "sandbox.json")
	if err87 := os.WriteFile(sandbox, []byte(`{"metadata": {"name": "p1", "namespace": "default", "uid": "u1", "attempt": 0}, "linux": {}, "log_directory": "/tmp"}`), 0o644); err87 != nil {
		t.Fatal(err87)
	}
	id, err := n.Crictl(ctx, "runp", sandbox)
	if err != nil {
		t.Fatalf("runp: %+v\ncontainerd log:\n%s", err, lab.Tail(n.ContainerdLog(), 30))
	}
	insp, err := n.Crictl(ctx, "inspectp", strings.TrimSpace(string(id)))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Status struct {
			Network struct{ IP string } `json:"network"`
		} `json:"status"`
	}
	if err := json.Unmarshal(insp, &st); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.Status.Network.IP, "10.110.0.") {
		t.Errorf("sandbox IP %q, want one from 10.110.0.0/24", st.Status.Network.IP)
	}
	if len(n.Cgroup.PIDs()) < 3 { // holder, containerd, shim, pause
		t.Errorf("node cgroup holds %v", n.Cgroup.PIDs())
	}
	cg := n.Cgroup
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %+v", err)
	}
	closed = true
	for _, d := range cg.Dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left (stat %v)", d, err)
		}
	}
}
