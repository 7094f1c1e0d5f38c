package daemon

import (
	"os"
	"syscall"
)

// CrashPoints are the fault-injection points of --crash-at (tests only): coild kills
// itself with SIGKILL there, leaving whatever half-done state a real crash would.
// add-after-alloc: the address committed, the veth pair possibly being prepared;
// add-after-prepare: the address committed and the pair prepared (pending), not
// configured.
var CrashPoints = []string{"add-after-alloc", "add-after-prepare", "add-after-setup", "del-after-intent", "del-after-teardown"}

func crashPoint(configured, here string) {
	if configured != "" && configured == here {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // not reached
	}
}
