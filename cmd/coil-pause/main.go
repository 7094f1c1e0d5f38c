// Command coil-pause is the pod sandbox ("pause") process of the coil-pause image: it
// holds the pod's namespaces by doing nothing. It sleeps until SIGTERM or SIGINT and then
// exits 0; it reaps every child that ends (as PID 1 of a pod that shares its PID
// namespace, orphans are re-parented to it). Like Kubernetes' pause, with `-v` it prints
// its version and exits. It uses only the standard library so it stays small.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// buildVersion is set with -ldflags "-X main.buildVersion=..." (as for the coil plugin).
var buildVersion = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("coil-pause " + buildVersion)
		return
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	if os.Getpid() != 1 { // printed once the signals are handled (tests wait for it)
		fmt.Fprintln(os.Stderr, "coil-pause: warning: not PID 1, orphans are not re-parented here")
	}
	for s := range sigs {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "coil-pause: %v, exiting\n", s)
		os.Exit(0)
	}
}

// reap collects every child that has ended (several may end per SIGCHLD).
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
