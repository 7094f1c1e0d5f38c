package daemon

import (
	"os"
	"syscall"
)

// CrashPoints are the fault-injection points of --crash-at (tests only): coild kills
// itself with SIGKILL there, leaving whatever half-done state a real crash would.
var CrashPoints = []string{"add-after-alloc", "add-after-setup", "del-after-intent", "del-after-teardown"}

func crashPoint(configured, here string) {
	if configured != "" && configured == here {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // not reached
	}
}
