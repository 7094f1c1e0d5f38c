package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoHeavyDeps keeps the plugin free of etcd and client-go: it is exec'd for every
// pod, and those would make it tens of MB and slow to start.
func TestNoHeavyDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/coil-net/coil/cmd/coil").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	n := 0
	for _, p := range strings.Fields(string(out)) {
		n++
		for _, bad := range []string{"go.etcd.io/", "k8s.io/", "sigs.k8s.io/", "github.com/vishvananda/netlink", "google.golang.org/grpc"} {
			if strings.HasPrefix(p, bad) {
				t.Errorf("cmd/coil depends on %s", p)
			}
		}
	}
	if n < 10 {
		t.Fatalf("go list printed only %d packages: %s", n, out)
	}
}
