// Package benchenv describes the machine a benchmark runs on, for the lines the
// benchmarks print and record with their numbers (docs/benchmarks.md): load average,
// CPU model, kernel and commit.
package benchenv

import (
	"os"
	"os/exec"
	"strings"
)

// LoadAvg is the 1, 5 and 15 minute load averages ("0.52 0.58 0.59"), "" when unknown.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// CPUModel is the model name of the first CPU in /proc/cpuinfo, "" when unknown.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Kernel is the kernel release ("6.8.0-45-generic"), "" when unknown.
func Kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

// Commit is the short hash of the checkout's HEAD, "" outside a git checkout.
func Commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
