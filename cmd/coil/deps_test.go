package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoHeavyDeps keeps the plugin's dependency graph small: it is exec'd for every
// pod, and every package linked in costs binary size and package-init time at each
// exec. etcd and client-go would make it tens of MB; cockroachdb/errors links
// sentry-go, gogo/protobuf and net/http (≈ 4 MB, ≈ 1 ms per exec); net/http alone
// links TLS and HTTP/2 code. The plugin uses the standard library's errors and a
// hand-written HTTP client instead (docs/cni.md, "Why so few dependencies").
func TestNoHeavyDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/coil-net/coil/cmd/coil").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	banned := []string{
		"go.etcd.io/", "k8s.io/", "sigs.k8s.io/", "github.com/vishvananda/netlink", "google.golang.org/grpc",
		"github.com/cockroachdb/", "github.com/getsentry/", "github.com/gogo/", "net/http", "crypto/tls",
	}
	n := 0
	for _, p := range strings.Fields(string(out)) {
		n++
		for _, bad := range banned {
			root := strings.TrimSuffix(bad, "/") // the package itself and everything below it
			if p == root || strings.HasPrefix(p, root+"/") {
				t.Errorf("cmd/coil depends on %s", p)
			}
		}
	}
	if n < 10 {
		t.Fatalf("go list printed only %d packages: %s", n, out)
	}
}
