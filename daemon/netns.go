package daemon

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/coil-net/coil/cniproto"
)

// netnsNotFound explains a CNI_NETNS that coild cannot open (netplumb.ErrNetNSNotFound).
// coild opens the path in its own mount and PID namespaces; in a pod those show the
// runtime's namespaces only through the DaemonSet's mounts and hostPID, so the message
// says which is missing. The code stays 4 (invalid environment).
func netnsNotFound(path string, cause error) *cniproto.Error {
	const docs = " (docs/kubernetes.md, \"Network namespace paths\")"
	dir := filepath.Dir(path)
	var why string
	switch st, err := os.Stat(path); {
	case strings.HasPrefix(path, "/proc/"):
		why = "the process is gone, or coild does not share the runtime's PID namespace: run coild's pod with hostPID: true" + docs
	case err == nil && st.Mode().IsRegular():
		why = "the path exists but is not a network namespace in coild's mount namespace: the runtime's mount did not propagate; mount " +
			dir + " into coild's pod with mountPropagation: HostToContainer" + docs
	case err == nil:
		why = "the path exists but is not a network namespace"
	default:
		if _, derr := os.Stat(dir); derr != nil {
			why = dir + " is not visible in coild's mount namespace: mount it (hostPath " + dir +
				", mountPropagation: HostToContainer) into coild's pod" + docs
		} else {
			why = "not visible in coild's mount namespace: the runtime removed it, or " + dir +
				" is not the runtime's (mount the host's " + dir + " with mountPropagation: HostToContainer)" + docs
		}
	}
	return cniproto.NewError(cniproto.CodeInvalidEnv, "network namespace not found: "+path+": "+why, cause.Error())
}
