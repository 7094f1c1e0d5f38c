package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/installcni"
	"github.com/coil-net/coil/internal/testutil"
)

var bin string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithDir(m, "install-cni-test-", func(dir string) error {
		bin = filepath.Join(dir, "install-cni")
		return gobuild.Build(context.Background(), bin, "./cmd/install-cni", true)
	}))
}

type node struct {
	plugins, bin, conf, cm string
}

func newNode(t *testing.T) node {
	t.Helper()
	root := t.TempDir()
	n := node{plugins: filepath.Join(root, "img"), bin: filepath.Join(root, "bin"), conf: filepath.Join(root, "net.d"), cm: filepath.Join(root, "cm")}
	for _, d := range []string{n.plugins, n.bin, n.conf, n.cm} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range installcni.DefaultPlugins {
		if err := os.WriteFile(filepath.Join(n.plugins, p), []byte("plugin "+p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func runBin(t *testing.T, env []string, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%s: %v", name, err)
	return "", 0
}

// Flags and their environment variables; the ConfigMap's conflist installed with --pool.
func TestInstallCNICommand(t *testing.T) {
	n := newNode(t)
	cm := filepath.Join(n.cm, "10-coil.conflist")
	if err := os.WriteFile(cm, []byte(installcni.DefaultConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"COIL_CNI_BIN_DIR=" + n.bin, "COIL_CNI_CONF_DIR=" + n.conf, "COIL_PLUGINS_DIR=" + n.plugins}
	out, code := runBin(t, env, bin, "--conflist", cm, "--pool", "blue")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{"installed CNI plugin", "path=" + n.bin + "/coil", "installed CNI conflist", "from=" + cm} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(filepath.Join(n.conf, "10-coil.conflist"))
	if err != nil || !strings.Contains(string(b), `"pool": "blue"`) {
		t.Errorf("conflist %s %v: want the pool set", b, err)
	}
	out, code = runBin(t, env, bin, "--conflist", cm, "--pool", "blue")
	if code != 0 || strings.Contains(out, "installed") || strings.Count(out, "unchanged") != 4 {
		t.Errorf("second run: exit %d, want everything unchanged:\n%s", code, out)
	}
	// Flags win over the environment.
	out, code = runBin(t, append(env, "COIL_PLUGINS=coil"), bin, "--plugins", "coil,portmap,bandwidth", "--cni-conf-dir", n.conf)
	if code != 0 {
		t.Errorf("exit %d: %s", code, out)
	}
}

func TestInstallCNIExitCodes(t *testing.T) {
	n := newNode(t)
	env := []string{"COIL_CNI_BIN_DIR=" + n.bin, "COIL_CNI_CONF_DIR=" + n.conf, "COIL_PLUGINS_DIR=" + n.plugins}
	for _, tc := range []struct {
		args []string
		env  []string
		code int
		msg  string
	}{
		{[]string{"--bogus"}, env, 2, "unknown flag: --bogus"},
		{[]string{"extra"}, env, 2, "unknown command"},
		{nil, []string{"COIL_CNI_BIN_DIR=/nonexistent", "COIL_CNI_CONF_DIR=" + n.conf, "COIL_PLUGINS_DIR=" + n.plugins}, 1,
			"install-cni: CNI bin directory /nonexistent does not exist: mount the host's CNI bin dir (hostPath /opt/cni/bin) there"},
		{[]string{"--conflist", "/nonexistent/10-coil.conflist"}, env, 1, "is the ConfigMap coil-cni mounted?"},
		{[]string{"--plugins", ","}, env, 1, "--plugins is empty"},
	} {
		out, code := runBin(t, tc.env, bin, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.msg) {
			t.Errorf("install-cni %q: exit %d %q, want %d and %q", tc.args, code, out, tc.code, tc.msg)
		}
	}
	if ents, _ := os.ReadDir(n.bin); len(ents) != 0 {
		t.Errorf("failed runs wrote %d files to the bin dir", len(ents))
	}
}

// A CNI bin dir mounted read-only (a hostPath with readOnly: true) fails with a message
// naming the directory, and leaves nothing behind. Run in a private mount namespace
// with a read-only bind mount (root: permission bits do not stop root).
func TestInstallCNIReadOnlyDir(t *testing.T) {
	testutil.RequireRoot(t)
	unshare := testutil.RequireCommand(t, "unshare")
	n := newNode(t)
	script := `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"`
	out, code := runBin(t, nil, unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", n.bin,
		bin, "--cni-bin-dir", n.bin, "--cni-conf-dir", n.conf, "--plugins-dir", n.plugins)
	if code != 1 || !strings.Contains(out, "create a temporary file for "+n.bin+"/coil") ||
		!strings.Contains(out, "read-only file system (is "+n.bin+" mounted read-write?)") {
		t.Errorf("exit %d, want 1 and a message naming the read-only dir:\n%s", code, out)
	}
	for _, d := range []string{n.bin, n.conf} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("%s holds %d files after the failure", d, len(ents))
		}
	}
}
