package cniserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/cniproto/cniserver"
	"github.com/coil-net/coil/cniproto/cniserver/cniservertest"
	"github.com/coil-net/coil/internal/testutil"
)

// peerClientEnv makes the test binary a client: it calls add on the socket the variable
// names and prints {"code":N,"msg":...} (or {"code":0}) on stdout.
const peerClientEnv = "CNISERVER_PEER_CLIENT"

func peerClient() int {
	c := cniproto.NewClient(os.Getenv(peerClientEnv), 10*time.Second)
	_, err := c.Add(context.Background(), addReq("peer1"))
	out := cniproto.Error{}
	var e *cniproto.Error
	switch {
	case errors.As(err, &e):
		out = *e
	case err != nil:
		out = cniproto.Error{Code: 1000, Msg: err.Error()}
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	return 0
}

// copyExecutable copies this test binary into a directory every user may enter and
// run files in (the build directory is root's only).
func copyExecutable(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "cniserver-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err = os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	bin = filepath.Join(dir, "client.test")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// runAs runs the client copy as uid (gid the same) and returns its answer and pid.
func runAs(t *testing.T, bin, sock string, uid uint32) (cniproto.Error, int) {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = []string{peerClientEnv + "=" + sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("client as uid %d: %v (stderr %s)", uid, err, stderr.String())
	}
	var e cniproto.Error
	if err := json.Unmarshal(stdout.Bytes(), &e); err != nil {
		t.Fatalf("client as uid %d printed %q: %v", uid, stdout.String(), err)
	}
	return e, cmd.Process.Pid
}

// TestPeerCredentials: a caller that may open the socket (its mode widened here, as a
// mistake or a bind mount into a user namespace would) but whose uid is neither 0 nor
// allowed is refused with code 5, naming its uid and pid, logged with both, and the
// handler never sees the call; an allowed uid is served.
func TestPeerCredentials(t *testing.T) {
	testutil.RequireRoot(t)
	const nobody, allowedUID = 65534, 65533
	dir, bin := copyExecutable(t)
	sock := filepath.Join(dir, "coild.sock")
	var logs testutil.Buffer
	h := &fakeHandler{}
	srv := cniservertest.Serve(t, h, sock, slog.New(slog.NewTextHandler(&logs, nil)), cniserver.Options{AllowUIDs: []uint32{allowedUID}})
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", fi.Mode(), err)
	}
	// Without the wider mode the kernel refuses the connection itself.
	e, _ := runAs(t, bin, sock, nobody)
	if e.Code != 1000 || !strings.Contains(e.Msg, "permission denied") {
		t.Fatalf("uid %d on a 0600 socket: %+v", nobody, e)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}

	e, pid := runAs(t, bin, sock, nobody)
	want := fmt.Sprintf("coild refuses this caller: uid %d gid %d pid %d is not allowed", nobody, nobody, pid)
	if e.Code != cniproto.CodePermissionDenied || !strings.Contains(e.Msg, want) || !strings.Contains(e.Details, "must run as root") {
		t.Fatalf("uid %d: got %+v, want code 5 %q", nobody, e, want)
	}
	if n := srv.RefusedPeers(); n != 1 {
		t.Errorf("RefusedPeers = %d, want 1", n)
	}
	line := ""
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "caller refused") {
			line = l
		}
	}
	for _, want := range []string{"uid=" + strconv.Itoa(nobody), "pid=" + strconv.Itoa(pid), "path=/v1/add", "level=WARN"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q (log: %s)", line, want, logs.String())
		}
	}

	e, _ = runAs(t, bin, sock, allowedUID)
	if e.Code != 0 {
		t.Fatalf("allowed uid %d: %+v", allowedUID, e)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reqs) != 1 {
		t.Fatalf("handler saw %d calls, want only the allowed one", len(h.reqs))
	}
}

// TestOwnUIDServed: the server's own uid (root here, the test's otherwise) is served
// without --allowed-uids: every other test in this package relies on it.
func TestOwnUIDServed(t *testing.T) {
	sock := serve(t, &fakeHandler{})
	if _, err := cniproto.NewClient(sock, 5*time.Second).Add(context.Background(), addReq("own")); err != nil {
		t.Fatal(err)
	}
}
