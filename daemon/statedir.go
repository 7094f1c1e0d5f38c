package daemon

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"golang.org/x/sys/unix"
)

// The state directory (--state-dir) holds, besides the DEL intents (del/):
//   - lock: flock'ed by the coild that uses the directory, for as long as it runs, and
//     holding its PID; a second coild is refused at start (ErrStateDirInUse);
//   - lease: the node record (JSON, nodeRecord), which proves which lease is this
//     directory's own and since when this directory's coild plumbed the node's pods in
//     the namespace it plumbs.
const (
	lockFileName   = "lock"
	recordFileName = "lease"
)

// ErrStateDirInUse: another coild holds the state directory's lock.
var ErrStateDirInUse = errors.New("coild: state directory in use by another coild")

// lockStateDir takes the state directory's lock (an exclusive flock on DIR/lock, never
// waiting) and writes the holder's PID into it. The lock lasts until the returned file is
// closed or the process ends (also by SIGKILL: the kernel drops it). If another process
// holds it, the error names the directory and the holder.
func lockStateDir(dir, node string) (*os.File, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, errors.Wrap(err, "state dir lock")
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "unknown"
			if b, rerr := os.ReadFile(path); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
				holder = strings.TrimSpace(string(b))
			}
			return nil, errors.Wrapf(ErrStateDirInUse, "--state-dir %s is locked by another coild (%s): each coild needs its own state directory; stop that coild or give this one another --state-dir",
				dir, holder)
		}
		return nil, errors.Wrapf(err, "lock %s", path)
	}
	host, _ := os.Hostname()
	desc := fmt.Sprintf("pid %d, node %s, host %s, since %s\n", os.Getpid(), node, host, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(desc), 0)
		if err != nil {
			_ = f.Close()
			return nil, errors.Wrapf(err, "write %s", path)
		}
	}
	return f, nil
}

// nodeRecord is DIR/lease: what this state directory's coild last did, so that a later
// coild using it (a restart) can prove what is its own.
//
// A lease is revoked at start only when the record proves it is this directory's: same
// node, same etcd cluster (ID) and key prefix, and the node's liveness key still held by
// that lease. A record that does not match (another node, another etcd, or a file of
// an older version) is never a reason to revoke anything.
//
// TrustFrom is the node-stream sequence from which on every attachment was made by a
// coild of this directory in the namespace NetNS during the boot BootID: the node's
// registrations since then were all this directory's (Registered is the lease of the
// last). Only for those (and for attachments older than the boot) does the reconciler
// conclude from a missing veth that the pod is gone.
type nodeRecord struct {
	Node       string `json:"node"`
	ClusterID  uint64 `json:"clusterID"`
	Prefix     string `json:"prefix"`
	Lease      int64  `json:"lease"`
	Registered int64  `json:"registered,omitempty"`
	BootID     string `json:"bootID,omitempty"`
	NetNS      string `json:"netns,omitempty"`
	TrustFrom  uint64 `json:"trustFrom,omitempty"`
}

// readRecord returns the directory's record, nil if there is none or it cannot be read
// (the reason, for the log).
func readRecord(dir string) (*nodeRecord, string) {
	b, err := os.ReadFile(filepath.Join(dir, recordFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, "no record"
	}
	if err != nil {
		return nil, err.Error()
	}
	var r nodeRecord
	if err := json.Unmarshal(b, &r); err != nil || r.Lease == 0 {
		return nil, fmt.Sprintf("unreadable record %q (an older coild's?)", strings.TrimSpace(string(b)))
	}
	return &r, ""
}

// writeRecord replaces the record atomically (temporary file, rename).
func writeRecord(dir string, r *nodeRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return errors.Wrap(err, "encode node record")
	}
	path := filepath.Join(dir, recordFileName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return errors.Wrap(err, "write node record")
	}
	return errors.Wrap(os.Rename(tmp, path), "write node record")
}

// bootInfo identifies the running boot of the machine.
type bootInfo struct {
	ID   string    // /proc/sys/kernel/random/boot_id
	Time time.Time // when it booted (/proc/stat btime)
}

// readBoot reads the boot ID and the boot time.
func readBoot() (bootInfo, error) {
	id, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return bootInfo{}, errors.Wrap(err, "boot ID")
	}
	f, err := os.Open("/proc/stat")
	if err != nil {
		return bootInfo{}, errors.Wrap(err, "boot time")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return bootInfo{}, errors.Wrapf(err, "boot time %q", v)
			}
			return bootInfo{ID: strings.TrimSpace(string(id)), Time: time.Unix(sec, 0)}, nil
		}
	}
	return bootInfo{}, errors.New("boot time: no btime in /proc/stat")
}
