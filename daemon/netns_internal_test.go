package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/netplumb"
)

// A CNI_NETNS coild cannot open gets a message that says which mount or hostPID is
// missing, for each way it can be invisible.
func TestNetNSNotFoundMessage(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "cni-1234") // an unpropagated mount point: an empty file
	if err := os.WriteFile(plain, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/proc/999999999/ns/net", "does not share the runtime's PID namespace: run coild's pod with hostPID: true"},
		{plain, "is not a network namespace in coild's mount namespace: the runtime's mount did not propagate; mount " + dir + " into coild's pod with mountPropagation: HostToContainer"},
		{"/run/coil-test-nonexistent/netns/cni-1", "/run/coil-test-nonexistent/netns is not visible in coild's mount namespace: mount it (hostPath /run/coil-test-nonexistent/netns, mountPropagation: HostToContainer)"},
		{filepath.Join(dir, "gone"), "the runtime removed it, or " + dir + " is not the runtime's"},
	} {
		cause := errors.Wrapf(netplumb.ErrNetNSNotFound, "%s", tc.path)
		e := netnsNotFound(tc.path, cause)
		if e.Code != cniproto.CodeInvalidEnv || !strings.HasPrefix(e.Msg, "network namespace not found: "+tc.path+": ") ||
			!strings.Contains(e.Msg, tc.want) || !strings.Contains(e.Msg, "docs/kubernetes.md") || e.Details != cause.Error() {
			t.Errorf("%s: %+v, want code %d and %q", tc.path, e, cniproto.CodeInvalidEnv, tc.want)
		}
	}
}
