package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/projection"
)

// One coild per state directory: a second lock is refused with a message naming the
// directory and the holder; closing the first releases it.
func TestLockStateDir(t *testing.T) {
	dir := t.TempDir()
	f, err := lockStateDir(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockStateDir(dir, "n1")
	want := fmt.Sprintf("--state-dir %s is locked by another coild (pid %d, node n1, host ", dir, os.Getpid())
	if !errors.Is(err, ErrStateDirInUse) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock = %v, want ErrStateDirInUse containing %q", err, want)
	}
	if err = f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := lockStateDir(dir, "n1")
	if err != nil {
		t.Fatalf("lock after the holder closed it: %v", err)
	}
	_ = g.Close()
}

func TestNodeRecord(t *testing.T) {
	dir := t.TempDir()
	if r, why := readRecord(dir); r != nil || why != "no record" {
		t.Fatalf("empty dir: %v %q", r, why)
	}
	// The plain lease ID an older coild wrote proves nothing.
	if err := os.WriteFile(filepath.Join(dir, recordFileName), []byte("7587887612345678"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r, why := readRecord(dir); r != nil || !strings.Contains(why, "unreadable record") {
		t.Fatalf("old format: %v %q", r, why)
	}
	in := &nodeRecord{Node: "n1", ClusterID: 1<<63 + 5, Prefix: "/coil/", Lease: 42, Registered: 41, BootID: "b", NetNS: "NS(4:1)", TrustFrom: 9}
	if err := writeRecord(dir, in); err != nil {
		t.Fatal(err)
	}
	if out, why := readRecord(dir); out == nil || *out != *in {
		t.Fatalf("round trip: %+v %q, want %+v", out, why, in)
	}
}

func TestReadBoot(t *testing.T) {
	b, err := readBoot()
	if err != nil {
		t.Fatal(err)
	}
	if len(b.ID) != 36 || b.Time.After(time.Now()) || b.Time.Before(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("boot %+v", b)
	}
}

// A missing veth's address is released only for attachments made since the state
// directory proved this namespace the node's (trustFrom), or before the boot.
func TestKeepUnproven(t *testing.T) {
	boot := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	d := &Daemon{log: slog.New(slog.DiscardHandler), metrics: newMetrics(), boot: bootInfo{ID: "b", Time: boot}, kept: map[string]bool{}}
	d.trustFrom.Store(10)
	asg := func(seq uint64, since time.Time) *allocator.Assignment {
		return &allocator.Assignment{Assignment: projection.Assignment{Seq: seq, Since: since}}
	}
	for _, tc := range []struct {
		name    string
		a       *allocator.Assignment
		release bool
	}{
		{"made since trust began", asg(10, boot.Add(time.Hour)), true},
		{"made later", asg(11, boot.Add(time.Hour)), true},
		{"made before trust, this boot", asg(9, boot.Add(time.Minute)), false},
		{"made before the boot", asg(3, boot.Add(-time.Minute)), true},
	} {
		if got := d.keepUnproven(tc.a, "veth-"+tc.name); got != tc.release {
			t.Errorf("%s: release = %v, want %v", tc.name, got, tc.release)
		}
	}
	if !d.kept["veth-made before trust, this boot"] || len(d.kept) != 1 {
		t.Errorf("kept = %v", d.kept)
	}
}
