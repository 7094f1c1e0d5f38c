package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary be the harness itself (and its etcd child, which it
// starts by running its own executable again) when COIL_SCALE_MAIN is set.
func TestMain(m *testing.M) {
	if os.Getenv("COIL_SCALE_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBootSmoke runs the boot scenario with 20 nodes against the harness's 3-member
// etcd, in both pool layouts: every node gets its address, nothing is held twice, and
// the last line of output is the JSON result with the fields the issue names.
func TestBootSmoke(t *testing.T) {
	for _, layout := range []string{"block-streams", "pool-stream"} {
		t.Run(layout, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-nodes", "20", "-scenario", "boot", "-layout", layout, "-timeout", "2m")
			cmd.Env = append(os.Environ(), "COIL_SCALE_MAIN=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("bench/scale: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			var r map[string]any
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
				t.Fatalf("last line is not a JSON object: %v\n%s", err, out)
			}
			for _, k := range []string{"nodes", "scenario", "all_blocked_s", "txns_per_block", "p50_ms", "p99_ms", "max_ms", "duplicates",
				"etcd_db_bytes", "watch_events_per_node", "client_heap_kib_per_node"} {
				if _, ok := r[k]; !ok {
					t.Errorf("result lacks %q: %s", k, lines[len(lines)-1])
				}
			}
			if r["nodes"] != 20.0 || r["scenario"] != "boot" || r["layout"] != layout || r["duplicates"] != 0.0 || r["allocs"] != 20.0 || r["error"] != nil {
				t.Fatalf("result: %s", lines[len(lines)-1])
			}
		})
	}
}
