package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/images"
	"github.com/coil-net/coil/internal/testutil"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithDir(m, "coil-testapp-", func(dir string) error {
		binDir = dir
		if err := gobuild.Build(context.Background(), filepath.Join(dir, images.TestApp), "./cmd/coil-testapp", true); err != nil {
			return err
		}
		// The links the image has in /bin.
		for _, a := range images.TestAppApplets {
			if err := os.Symlink(images.TestApp, filepath.Join(dir, a)); err != nil {
				return err
			}
		}
		return nil
	}))
}

func run(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, name), args...).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// Each applet the image links behaves as critest expects of busybox.
func TestApplets(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 10.10.10.10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{".hidden", "b", "a"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	host, _ := os.Hostname()
	tested := map[string]bool{}
	for _, tc := range []struct {
		applet string
		args   []string
		out    string
		code   int
	}{
		{"cat", []string{filepath.Join(dir, "resolv.conf")}, "nameserver 10.10.10.10\n", 0},
		{"cat", []string{filepath.Join(dir, "nope")}, "", 1},
		{"echo", []string{"-n", "hello"}, "hello", 0},
		{"echo", []string{"a", "b"}, "a b\n", 0},
		{"hostname", nil, host + "\n", 0},
		{"ls", []string{"-A", dir}, ".hidden\na\nb\nresolv.conf\n", 0},
		{"ls", []string{dir}, "a\nb\nresolv.conf\n", 0},
		{"ls", []string{filepath.Join(dir, "nope")}, "", 2},
		{"sleep", []string{"0.01"}, "", 0},
		{"sleep", []string{"x"}, "", 2},
		{"true", nil, "", 0},
	} {
		tested[tc.applet] = true
		out, code := run(t, tc.applet, tc.args...)
		if out != tc.out || code != tc.code {
			t.Errorf("%s %q: %q exit %d, want %q exit %d", tc.applet, tc.args, out, code, tc.out, tc.code)
		}
		// The same as a subcommand of coil-testapp.
		if out2, code2 := run(t, images.TestApp, append([]string{tc.applet}, tc.args...)...); out2 != out || code2 != code {
			t.Errorf("coil-testapp %s %q: %q exit %d, via the link %q exit %d", tc.applet, tc.args, out2, code2, out, code)
		}
	}
	// top: runs until SIGTERM, then exits 0.
	tested["top"] = true
	cmd := exec.Command(filepath.Join(binDir, "top"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(stderr).ReadString('\n'); err != nil || !strings.HasPrefix(line, "top: ") {
		t.Fatalf("top's first line %q %v", line, err)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("top after SIGTERM: %v, want exit 0", err)
	}
	for _, a := range images.TestAppApplets {
		if !tested[a] {
			t.Errorf("applet %s linked in the image is not tested", a)
		}
	}
	if _, code := run(t, images.TestApp, "bogus"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}

// The server answers with its host name and addresses; probe reports reachable and
// unreachable targets, in text and JSON, with the right exit code.
func TestServeAndProbe(t *testing.T) {
	cmd := exec.Command(filepath.Join(binDir, images.TestApp), "serve", "-listen", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err = cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.Fields(strings.SplitAfter(line, "serving on ")[1])[0]

	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()

	out, code := run(t, images.TestApp, "probe", "-o", "json", "http://"+addr+"/", addr, "http://"+addr+"/healthz", closed)
	if code != 1 {
		t.Errorf("probe exit %d, want 1 (one target down)", code)
	}
	var rs []Result
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r Result
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		rs = append(rs, r)
	}
	host, _ := os.Hostname()
	if len(rs) != 4 || !rs[0].OK || rs[0].Hostname != host || !rs[1].OK || !rs[2].OK || rs[3].OK ||
		!strings.Contains(rs[3].Error, "connection refused") {
		t.Errorf("results %+v", rs)
	}
	out, code = run(t, images.TestApp, "probe", "http://"+addr+"/")
	if code != 0 || !strings.HasPrefix(out, "ok    http://"+addr+"/ ") || !strings.Contains(out, host) {
		t.Errorf("text probe: %q exit %d", out, code)
	}
	out, code = run(t, images.TestApp, "probe", "-retry-for", "500ms", "-timeout", "100ms", closed)
	if code != 1 || !strings.HasPrefix(out, "FAIL  "+closed+" after ") {
		t.Errorf("retried probe: %q exit %d", out, code)
	}
	if _, code := run(t, images.TestApp, "probe"); code != 2 {
		t.Errorf("probe without targets: exit %d, want 2", code)
	}

	// SIGTERM: graceful stop, exit 0.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve after SIGTERM: %v, want exit 0", err)
	}
}
