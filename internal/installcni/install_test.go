package installcni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// world is a fake node (bin and conf dirs) and a fake image (plugins dir).
type world struct {
	t                     *testing.T
	plugins, bin, confDir string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	root := t.TempDir()
	w := &world{t: t, plugins: filepath.Join(root, "image-plugins"), bin: filepath.Join(root, "bin"), confDir: filepath.Join(root, "net.d")}
	for _, d := range []string{w.plugins, w.bin, w.confDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range DefaultPlugins {
		w.write(filepath.Join(w.plugins, p), "#!plugin "+p+" v1\n", 0o755)
	}
	return w
}

func (w *world) write(path, content string, mode os.FileMode) {
	w.t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) config() Config {
	return Config{PluginsDir: w.plugins, BinDir: w.bin, ConfDir: w.confDir}
}

// snapshot lists every file of the node's dirs with mode, inode and content.
func (w *world) snapshot() map[string]string {
	w.t.Helper()
	out := map[string]string{}
	for _, d := range []string{w.bin, w.confDir} {
		ents, err := os.ReadDir(d)
		if err != nil {
			w.t.Fatal(err)
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			st, err := os.Lstat(p)
			if err != nil {
				w.t.Fatal(err)
			}
			b, _ := os.ReadFile(p)
			out[p] = fmt.Sprintf("%v ino=%d %q", st.Mode(), st.Sys().(*syscall.Stat_t).Ino, b)
		}
	}
	return out
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A fresh install copies every plugin (executable) and the conflist; a second run
// changes nothing (same inodes: nothing renamed); other files are never touched and no
// temporary file is left.
func TestInstallAndIdempotent(t *testing.T) {
	w := newWorld(t)
	w.write(filepath.Join(w.bin, "loopback"), "host's loopback", 0o755)
	w.write(filepath.Join(w.bin, "coil"), "an old coil", 0o700)
	w.write(filepath.Join(w.confDir, "99-other.conflist"), "someone else's", 0o600)
	w.write(filepath.Join(w.confDir, ".hidden"), "hidden", 0o644)

	res, err := Install(w.config())
	if err != nil {
		t.Fatal(err)
	}
	var changed []string
	for _, f := range res.Files {
		if f.Changed {
			changed = append(changed, filepath.Base(f.Path))
		}
	}
	if got := strings.Join(changed, ","); got != "coil,portmap,bandwidth,10-coil.conflist" {
		t.Errorf("changed %s, want every plugin then the conflist", got)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings: %q", res.Warnings)
	}
	for _, p := range DefaultPlugins {
		path := filepath.Join(w.bin, p)
		if got := read(t, path); got != "#!plugin "+p+" v1\n" {
			t.Errorf("%s = %q", path, got)
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, want 0755", path, st.Mode())
		}
	}
	if got := read(t, filepath.Join(w.confDir, DefaultConflistName)); got != DefaultConflist {
		t.Errorf("conflist = %q", got)
	}
	for path, want := range map[string]string{
		filepath.Join(w.bin, "loopback"):              "host's loopback",
		filepath.Join(w.confDir, "99-other.conflist"): "someone else's",
		filepath.Join(w.confDir, ".hidden"):           "hidden",
	} {
		if got := read(t, path); got != want {
			t.Errorf("%s = %q, want it untouched", path, got)
		}
	}

	before := w.snapshot()
	res, err = Install(w.config())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Files {
		if f.Changed {
			t.Errorf("second run changed %s", f.Path)
		}
	}
	after := w.snapshot()
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("second run changed the directories:\nbefore %v\nafter  %v", before, after)
	}
	if n := len(after); n != 7 { // 3 plugins + loopback; conflist + 99-other + .hidden
		t.Errorf("%d files, want 7 (no temporary files): %v", n, after)
	}
}

// A plugin that is replaced is renamed over, never written in place: a process holding
// the old file (a running plugin) keeps reading the old content in full.
func TestInstallReplacesByRename(t *testing.T) {
	w := newWorld(t)
	if _, err := Install(w.config()); err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(filepath.Join(w.bin, "coil"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = old.Close() }()
	w.write(filepath.Join(w.plugins, "coil"), "#!plugin coil v2, longer than v1\n", 0o755)
	res, err := Install(w.config())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Files[0].Changed || res.Files[1].Changed {
		t.Errorf("files %+v: want only coil changed", res.Files)
	}
	b := make([]byte, 100)
	n, _ := old.ReadAt(b, 0)
	if string(b[:n]) != "#!plugin coil v1\n" {
		t.Errorf("the open old plugin reads %q: it was overwritten in place", b[:n])
	}
	if got := read(t, filepath.Join(w.bin, "coil")); got != "#!plugin coil v2, longer than v1\n" {
		t.Errorf("new coil = %q", got)
	}
}

// A reader of the conflist sees either the old or the new file, whole, never a part,
// while installs with changing content run.
func TestInstallConflistIsAtomic(t *testing.T) {
	w := newWorld(t)
	versions := map[string]bool{}
	mk := func(i int) []byte {
		// Big enough to take several writes' worth of time.
		c := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"net-%d","plugins":[{"type":"coil","pad":%q}]}`, i, strings.Repeat("x", 64<<10))
		versions[c] = true
		return []byte(c)
	}
	cfg := w.config()
	cfg.Conflist = mk(0)
	if _, err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	confs := make([][]byte, 50)
	for i := range confs {
		confs[i] = mk(i + 1)
	}
	var stop atomic.Bool
	var reads, torn atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			b, err := os.ReadFile(filepath.Join(w.confDir, DefaultConflistName))
			reads.Add(1)
			if err != nil || !versions[string(b)] {
				torn.Add(1)
			}
		}
	}()
	for _, c := range confs {
		cfg.Conflist = c
		if _, err := Install(cfg); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if torn.Load() != 0 {
		t.Errorf("%d of %d reads saw a missing or partial conflist", torn.Load(), reads.Load())
	}
	t.Logf("%d reads during 50 installs, none torn", reads.Load())
}

// Temporary files a crashed run left are removed; other hidden files are not.
func TestInstallRemovesOwnStaleTemporaries(t *testing.T) {
	w := newWorld(t)
	stale := []string{filepath.Join(w.bin, ".coil"+tmpMarker+"123"), filepath.Join(w.confDir, "."+DefaultConflistName+tmpMarker+"9")}
	for _, p := range stale {
		w.write(p, "half", 0o600)
	}
	w.write(filepath.Join(w.bin, ".keep-me"), "x", 0o644)
	if _, err := Install(w.config()); err != nil {
		t.Fatal(err)
	}
	for _, p := range stale {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there (%v)", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(w.bin, ".keep-me")); err != nil {
		t.Errorf("another hidden file was removed: %v", err)
	}
}

// --pool and --socket go into the coil plugin; the rest of the conflist is kept; the
// same settings give the same bytes (idempotent).
func TestInstallPoolAndSocket(t *testing.T) {
	w := newWorld(t)
	cfg := w.config()
	cfg.Pool, cfg.Socket = "blue", "/run/coil/coild.sock"
	if _, err := Install(cfg); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(w.confDir, DefaultConflistName)
	first := read(t, path)
	var list struct {
		CNIVersion  string           `json:"cniVersion"`
		CNIVersions []string         `json:"cniVersions"`
		Name        string           `json:"name"`
		Plugins     []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(first), &list); err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.0.0" || fmt.Sprint(list.CNIVersions) != "[1.0.0 1.1.0]" || list.Name != "k8s-pod-network" || len(list.Plugins) != 3 {
		t.Errorf("conflist %+v: the rest of the default changed", list)
	}
	if p := list.Plugins[0]; p["pool"] != "blue" || p["socket"] != "/run/coil/coild.sock" || p["timeout"] != "30s" {
		t.Errorf("coil plugin %v", p)
	}
	res, err := Install(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files[len(res.Files)-1].Changed || read(t, path) != first {
		t.Error("the same settings rewrote the conflist")
	}
}

func TestInstallWarnings(t *testing.T) {
	w := newWorld(t)
	w.write(filepath.Join(w.confDir, "05-other.conf"), "{}", 0o644)
	cfg := w.config()
	cfg.Conflist = []byte(`{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"coil"}]}`)
	res, err := Install(cfg)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(res.Warnings, "\n")
	for _, want := range []string{`"cniVersion": "1.1.0" and no "cniVersions": containerd 1.6 and 1.7 reject`, "05-other.conf sorts before 10-coil.conflist"} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings %q lack %q", res.Warnings, want)
		}
	}
}

// Every bad input is an error with the sentinel and a message that says what to fix,
// and the node's directories are exactly as before.
func TestInstallBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(w *world, c *Config)
		want   error
		msg    string
	}{
		{"missing bin dir", func(w *world, c *Config) { c.BinDir = filepath.Join(w.bin, "nope") }, ErrMissingDir,
			"CNI bin directory " + "%BIN%/nope does not exist: mount the host's CNI bin dir (hostPath /opt/cni/bin) there"},
		{"bin dir is a file", func(w *world, c *Config) { c.BinDir = filepath.Join(w.bin, "loopback") }, ErrMissingDir, "is not a directory"},
		{"missing conf dir", func(w *world, c *Config) { c.ConfDir = "/nonexistent/net.d" }, ErrMissingDir,
			"CNI configuration directory /nonexistent/net.d does not exist: mount the host's CNI configuration dir (hostPath /etc/cni/net.d)"},
		{"missing plugins dir", func(w *world, c *Config) { c.PluginsDir = "/nonexistent/plugins" }, ErrMissingDir, "plugins directory /nonexistent/plugins does not exist"},
		{"missing plugin", func(w *world, c *Config) { c.Plugins = []string{"coil", "tuning"} }, ErrMissingPlugin, "/tuning does not exist"},
		{"plugin not executable", func(w *world, c *Config) { w.write(filepath.Join(w.plugins, "portmap"), "x", 0o644) }, ErrMissingPlugin, "portmap is not executable"},
		{"plugin name with a slash", func(w *world, c *Config) { c.Plugins = []string{"../coil"} }, ErrInvalidConfig, `plugin name "../coil": want a plain file name`},
		{"conflist name", func(w *world, c *Config) { c.ConflistName = "10-coil.json" }, ErrInvalidConfig, "must end in .conflist"},
		{"hidden conflist name", func(w *world, c *Config) { c.ConflistName = ".10-coil.conflist" }, ErrInvalidConfig, "plain file name"},
		{"not JSON", func(w *world, c *Config) { c.Conflist = []byte(`{"name":`) }, ErrInvalidConflist, "not a JSON object"},
		{"no name", func(w *world, c *Config) { c.Conflist = []byte(`{"cniVersion":"1.0.0","plugins":[{"type":"coil"}]}`) }, ErrInvalidConflist, `"name" must be`},
		{"no version", func(w *world, c *Config) { c.Conflist = []byte(`{"name":"n","plugins":[{"type":"coil"}]}`) }, ErrInvalidConflist, `"cniVersion" must be`},
		{"bad versions", func(w *world, c *Config) {
			c.Conflist = []byte(`{"cniVersion":"1.0.0","cniVersions":"1.1.0","name":"n","plugins":[{"type":"coil"}]}`)
		}, ErrInvalidConflist, `"cniVersions" must be a list`},
		{"no plugins", func(w *world, c *Config) { c.Conflist = []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[]}`) }, ErrInvalidConflist, `"plugins" must be a non-empty list`},
		{"single plugin conf", func(w *world, c *Config) { c.Conflist = []byte(`{"cniVersion":"1.0.0","name":"n","type":"coil"}`) }, ErrInvalidConflist, `"plugins" must be a non-empty list`},
		{"coil not first", func(w *world, c *Config) {
			c.Conflist = []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"portmap"},{"type":"coil"}]}`)
		}, ErrInvalidConflist, `the first plugin must be "coil"`},
		{"two coils", func(w *world, c *Config) {
			c.Conflist = []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"coil"},{"type":"coil"}]}`)
		}, ErrInvalidConflist, `two "coil" plugins`},
		{"plugin not on the node", func(w *world, c *Config) {
			c.Conflist = []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"coil"},{"type":"tuning"}]}`)
		}, ErrInvalidConflist, `plugin "tuning" is neither installed by install-cni (--plugins coil,portmap,bandwidth) nor present in`},
		{"portmap not installed", func(w *world, c *Config) { c.Plugins = []string{"coil"} }, ErrInvalidConflist, `plugin "portmap" is neither installed`},
		{"type with a slash", func(w *world, c *Config) {
			c.Conflist = []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"coil"},{"type":"../x"}]}`)
		}, ErrInvalidConflist, `"type" "../x" is not a plugin file name`},
		{"bad pool", func(w *world, c *Config) { c.Pool = "Blue_Pool" }, ErrInvalidConfig, `pool: "Blue_Pool": use lower-case letters`},
		{"bad socket", func(w *world, c *Config) { c.Socket = "run/coild.sock" }, ErrInvalidConfig, `socket "run/coild.sock": want an absolute, clean path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.write(filepath.Join(w.bin, "loopback"), "host's", 0o755)
			w.write(filepath.Join(w.confDir, "10-coil.conflist"), "previous", 0o644)
			cfg := w.config()
			tc.mutate(w, &cfg)
			before := w.snapshot()
			_, err := Install(cfg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if msg := strings.ReplaceAll(tc.msg, "%BIN%", w.bin); !strings.Contains(err.Error(), msg) {
				t.Errorf("err = %q, want it to say %q", err, msg)
			}
			if after := w.snapshot(); fmt.Sprint(before) != fmt.Sprint(after) {
				t.Errorf("the node's directories changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// The default conflist is accepted by Install (every plugin it names is installed).
func TestDefaultConflistNamesDefaultPlugins(t *testing.T) {
	var list struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(DefaultConflist), &list); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Type)
	}
	want := append([]string(nil), DefaultPlugins...)
	sort.Strings(types)
	sort.Strings(want)
	if fmt.Sprint(types) != fmt.Sprint(want) {
		t.Errorf("conflist plugins %v, installed plugins %v", types, want)
	}
	if !bytes.HasSuffix([]byte(DefaultConflist), []byte("\n")) {
		t.Error("the conflist should end with a newline")
	}
}

func TestPoolNameAgreesWithEvents(t *testing.T) {
	for _, n := range []string{"a", "default", "blue-1", "a.b", "0", "-a", "a-", ".a", "A", "a_b", "a b",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "ä"} {
		ours, theirs := validPoolName(n) == nil, events.ValidName(n) == nil
		if ours != theirs {
			t.Errorf("pool name %q: install-cni says valid=%v, events.ValidName says %v", n, ours, theirs)
		}
	}
}
