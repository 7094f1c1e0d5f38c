package installcni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"
)

// Defaults: the paths of coild's DaemonSet (deploy/coild.yaml) and of the coil image.
const (
	// DefaultPluginsDir is where the coil image keeps the plugins to install.
	DefaultPluginsDir = "/usr/local/lib/coil/cni"
	// DefaultBinDir is the host's CNI bin dir (/opt/cni/bin) as the init container
	// mounts it.
	DefaultBinDir = "/host/opt/cni/bin"
	// DefaultConfDir is the host's CNI configuration dir (/etc/cni/net.d) as the init
	// container mounts it.
	DefaultConfDir = "/host/etc/cni/net.d"
	// DefaultConflistName is the installed conflist's file name.
	DefaultConflistName = "10-coil.conflist"
)

// DefaultPlugins are the plugins install-cni copies: coil and the two chained after it
// in DefaultConflist (containernetworking/plugins, at the version go.mod pins).
var DefaultPlugins = []string{"coil", "portmap", "bandwidth"}

// DefaultConflist is the network configuration list installed when none is given; the
// ConfigMap coil-cni in deploy/config.yaml holds the same (kube/deploy_test.go checks).
//
// "cniVersion" is 1.0.0 and "cniVersions" lists 1.0.0 and 1.1.0: containerd 1.6 and 1.7
// (libcni 1.1) read only "cniVersion" and reject a 1.1.0 result ("unsupported CNI result
// version"); containerd 2 and CRI-O (libcni 1.2 and later) pick the newest version of
// "cniVersions" they support, 1.1.0, and so get STATUS and GC. The coil plugin answers in
// the version it is asked (0.3.1 to 1.1.0). portmap serves hostPort (capability
// portMappings), bandwidth the kubernetes.io/ingress-bandwidth and egress-bandwidth
// annotations (capability bandwidth); without them in the runtime config both pass the
// result through unchanged.
const DefaultConflist = `{
  "cniVersion": "1.0.0",
  "cniVersions": ["1.0.0", "1.1.0"],
  "name": "k8s-pod-network",
  "plugins": [
    { "type": "coil", "socket": "/run/coild.sock", "timeout": "30s" },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "bandwidth", "capabilities": { "bandwidth": true } }
  ]
}
`

// Errors. Each wraps one of these sentinels; the message says what to fix.
var (
	// ErrMissingDir: a directory to read from or write to does not exist (or is not a
	// directory).
	ErrMissingDir = errors.New("installcni: missing directory")
	// ErrMissingPlugin: a plugin to install is not in the plugins directory.
	ErrMissingPlugin = errors.New("installcni: missing plugin")
	// ErrInvalidConflist: the conflist to install is not one Coil can work with.
	ErrInvalidConflist = errors.New("installcni: invalid conflist")
	// ErrInvalidConfig: a bad setting (pool, socket, plugin or file name).
	ErrInvalidConfig = errors.New("installcni: invalid configuration")
	// ErrWrite: a file could not be written (read-only mount, permissions, full disk).
	ErrWrite = errors.New("installcni: cannot write")
)

// tmpMarker is in the name of every temporary file this package makes:
// ".<name>.coil-tmp-<random>".
const tmpMarker = ".coil-tmp-"

// Config says what to install where.
type Config struct {
	// PluginsDir holds the plugins to copy (DefaultPluginsDir).
	PluginsDir string
	// Plugins are the file names to copy from PluginsDir (DefaultPlugins).
	Plugins []string
	// BinDir is the host's CNI bin dir (DefaultBinDir); it must exist.
	BinDir string
	// ConfDir is the host's CNI configuration dir (DefaultConfDir); it must exist.
	ConfDir string
	// ConflistName is the installed conflist's file name (DefaultConflistName).
	ConflistName string
	// Conflist is the conflist to install; nil means DefaultConflist.
	Conflist []byte
	// ConflistSource names where Conflist came from, for messages.
	ConflistSource string
	// Pool, when set, becomes the coil plugin's "pool" (otherwise annotations and
	// coild's --default-pool decide).
	Pool string
	// Socket, when set, becomes the coil plugin's "socket".
	Socket string
	// Logger gets one line per file and the warnings; nil discards.
	Logger *slog.Logger
}

// Result says what Install did.
type Result struct {
	// Files are the destination files in the order written, with whether each changed.
	Files []FileResult
	// Warnings are problems that do not stop the installation.
	Warnings []string
}

// FileResult is one installed file.
type FileResult struct {
	Path    string
	Changed bool
}

func (c *Config) defaults() {
	if c.PluginsDir == "" {
		c.PluginsDir = DefaultPluginsDir
	}
	if c.Plugins == nil {
		c.Plugins = DefaultPlugins
	}
	if c.BinDir == "" {
		c.BinDir = DefaultBinDir
	}
	if c.ConfDir == "" {
		c.ConfDir = DefaultConfDir
	}
	if c.ConflistName == "" {
		c.ConflistName = DefaultConflistName
	}
	if c.Conflist == nil {
		c.Conflist = []byte(DefaultConflist)
		c.ConflistSource = "the built-in default"
	}
	if c.ConflistSource == "" {
		c.ConflistSource = "the given conflist"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Install checks everything, then copies the plugins and writes the conflist. On error
// nothing was changed, unless the error is ErrWrite for a later file (files already
// written are complete and valid; running Install again finishes the job).
func Install(cfg Config) (*Result, error) {
	cfg.defaults()
	res := &Result{}
	warn := func(msg string) {
		res.Warnings = append(res.Warnings, msg)
		cfg.Logger.Warn(msg)
	}
	if err := checkDir(cfg.PluginsDir, "plugins directory", "the coil image keeps the plugins in "+DefaultPluginsDir); err != nil {
		return nil, err
	}
	if err := checkDir(cfg.BinDir, "CNI bin directory", "mount the host's CNI bin dir (hostPath /opt/cni/bin) there"); err != nil {
		return nil, err
	}
	if err := checkDir(cfg.ConfDir, "CNI configuration directory", "mount the host's CNI configuration dir (hostPath /etc/cni/net.d) there"); err != nil {
		return nil, err
	}
	if err := checkFileName(cfg.ConflistName, "conflist name"); err != nil {
		return nil, err
	}
	if !strings.HasSuffix(cfg.ConflistName, ".conflist") {
		return nil, errors.Wrapf(ErrInvalidConfig, "conflist name %q must end in .conflist (runtimes read *.conflist as a list of plugins)", cfg.ConflistName)
	}
	plugins := map[string][]byte{}
	for _, p := range cfg.Plugins {
		if err := checkFileName(p, "plugin name"); err != nil {
			return nil, err
		}
		b, err := readPlugin(filepath.Join(cfg.PluginsDir, p))
		if err != nil {
			return nil, err
		}
		plugins[p] = b
	}
	conflist, warnings, err := renderConflist(cfg, plugins)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		warn(w)
	}

	for _, p := range cfg.Plugins {
		changed, werr := writeAtomic(cfg.BinDir, p, plugins[p], 0o755)
		if werr != nil {
			return res, werr
		}
		res.Files = append(res.Files, FileResult{Path: filepath.Join(cfg.BinDir, p), Changed: changed})
		cfg.Logger.Info(verb(changed)+" CNI plugin", "path", filepath.Join(cfg.BinDir, p))
	}
	changed, err := writeAtomic(cfg.ConfDir, cfg.ConflistName, conflist, 0o644)
	if err != nil {
		return res, err
	}
	res.Files = append(res.Files, FileResult{Path: filepath.Join(cfg.ConfDir, cfg.ConflistName), Changed: changed})
	cfg.Logger.Info(verb(changed)+" CNI conflist", "path", filepath.Join(cfg.ConfDir, cfg.ConflistName), "from", cfg.ConflistSource)

	for _, dir := range []string{cfg.BinDir, cfg.ConfDir} {
		removeStaleTemps(dir, cfg.Logger)
	}
	if first := firstConfig(cfg.ConfDir); first != "" && first != cfg.ConflistName {
		warn(fmt.Sprintf("%s sorts before %s in %s: runtimes use the first network configuration in name order, so pods get %s's network, not Coil's; remove it or rename the conflist (--conflist-name)",
			first, cfg.ConflistName, cfg.ConfDir, first))
	}
	return res, nil
}

func verb(changed bool) string {
	if changed {
		return "installed"
	}
	return "unchanged"
}

func checkDir(dir, what, hint string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.Wrapf(ErrMissingDir, "%s %s does not exist: %s", what, dir, hint)
	case err != nil:
		return errors.Wrapf(ErrMissingDir, "%s %s: %v", what, dir, err)
	case !st.IsDir():
		return errors.Wrapf(ErrMissingDir, "%s %s is not a directory: %s", what, dir, hint)
	}
	return nil
}

func checkFileName(n, what string) error {
	if n == "" || n == "." || n == ".." || strings.ContainsRune(n, '/') || strings.HasPrefix(n, ".") {
		return errors.Wrapf(ErrInvalidConfig, "%s %q: want a plain file name", what, n)
	}
	return nil
}

func readPlugin(path string) ([]byte, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, errors.Wrapf(ErrMissingPlugin, "plugin %s does not exist (is this the coil image? list the plugins to install with --plugins)", path)
	case err != nil:
		return nil, errors.Wrapf(ErrMissingPlugin, "plugin %s: %v", path, err)
	case !st.Mode().IsRegular():
		return nil, errors.Wrapf(ErrMissingPlugin, "plugin %s is not a regular file", path)
	case st.Mode().Perm()&0o111 == 0:
		return nil, errors.Wrapf(ErrMissingPlugin, "plugin %s is not executable", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Wrapf(ErrMissingPlugin, "read plugin %s: %v", path, err)
	}
	return b, nil
}

// renderConflist checks the conflist and applies Pool and Socket. It returns the bytes
// to install: the input unchanged when there is nothing to apply.
func renderConflist(cfg Config, plugins map[string][]byte) ([]byte, []string, error) {
	bad := func(format string, args ...any) error {
		return errors.Wrapf(ErrInvalidConflist, "%s: %s", cfg.ConflistSource, fmt.Sprintf(format, args...))
	}
	var list map[string]json.RawMessage
	if err := json.Unmarshal(cfg.Conflist, &list); err != nil || list == nil {
		return nil, nil, bad("not a JSON object (%v)", err)
	}
	var name, version string
	if err := json.Unmarshal(list["name"], &name); err != nil || name == "" {
		return nil, nil, bad(`"name" must be a non-empty string`)
	}
	if err := json.Unmarshal(list["cniVersion"], &version); err != nil || version == "" {
		return nil, nil, bad(`"cniVersion" must be a version string such as "1.0.0"`)
	}
	var versions []string
	if raw, ok := list["cniVersions"]; ok {
		if err := json.Unmarshal(raw, &versions); err != nil {
			return nil, nil, bad(`"cniVersions" must be a list of version strings`)
		}
	}
	var pluginConfs []map[string]json.RawMessage
	if err := json.Unmarshal(list["plugins"], &pluginConfs); err != nil || len(pluginConfs) == 0 {
		return nil, nil, bad(`"plugins" must be a non-empty list of plugin configurations`)
	}
	coil := -1
	for i, p := range pluginConfs {
		var typ string
		if err := json.Unmarshal(p["type"], &typ); err != nil || typ == "" {
			return nil, nil, bad(`plugin %d has no "type"`, i)
		}
		if checkFileName(typ, "plugin type") != nil {
			return nil, nil, bad(`plugin %d: "type" %q is not a plugin file name`, i, typ)
		}
		if typ == "coil" {
			if coil >= 0 {
				return nil, nil, bad(`two "coil" plugins (%d and %d)`, coil, i)
			}
			coil = i
		}
		if _, ours := plugins[typ]; !ours {
			if st, err := os.Stat(filepath.Join(cfg.BinDir, typ)); err != nil || !st.Mode().IsRegular() {
				return nil, nil, bad(`plugin %q is neither installed by install-cni (--plugins %s) nor present in %s: every pod would fail; add it to --plugins, install it on the host, or remove it from the conflist`,
					typ, strings.Join(cfg.Plugins, ","), cfg.BinDir)
			}
		}
	}
	if coil != 0 {
		return nil, nil, bad(`the first plugin must be "coil" (it sets up the pod's interface; chained plugins such as portmap and bandwidth follow it)`)
	}
	var warnings []string
	if version > "1.0.0" && len(versions) == 0 { // versions here are 0.x.y or 1.x.y: string order works
		warnings = append(warnings, fmt.Sprintf(`%s has "cniVersion": %q and no "cniVersions": containerd 1.6 and 1.7 reject the plugin's %s result ("unsupported CNI result version"); use "cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"]`,
			cfg.ConflistSource, version, version))
	}
	if cfg.Pool == "" && cfg.Socket == "" {
		return cfg.Conflist, warnings, nil
	}
	if cfg.Pool != "" {
		if err := validPoolName(cfg.Pool); err != nil {
			return nil, nil, errors.Wrapf(ErrInvalidConfig, "pool: %v", err)
		}
		pluginConfs[0]["pool"], _ = json.Marshal(cfg.Pool)
	}
	if cfg.Socket != "" {
		if !filepath.IsAbs(cfg.Socket) || filepath.Clean(cfg.Socket) != cfg.Socket {
			return nil, nil, errors.Wrapf(ErrInvalidConfig, "socket %q: want an absolute, clean path", cfg.Socket)
		}
		pluginConfs[0]["socket"], _ = json.Marshal(cfg.Socket)
	}
	list["plugins"], _ = json.Marshal(pluginConfs)
	var out bytes.Buffer
	b, _ := json.Marshal(list) // map keys in order: the same input gives the same bytes
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, nil, errors.Wrap(err, "installcni: format conflist")
	}
	out.WriteByte('\n')
	return out.Bytes(), warnings, nil
}

// validPoolName is events.ValidName's rule (install-cni does not link the events
// package; a test checks they agree): a DNS-1123 subdomain of at most 63 characters.
func validPoolName(name string) error {
	if len(name) > 63 {
		return fmt.Errorf("%q is longer than 63 characters", name)
	}
	for i, c := range name {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			continue
		}
		if (c == '-' || c == '.') && i > 0 && i < len(name)-1 {
			continue
		}
		return fmt.Errorf("%q: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", name)
	}
	return nil
}

// writeAtomic makes dir/name hold data with mode perm: unchanged if it already does,
// else through a temporary file in dir, synced and renamed, and dir synced.
func writeAtomic(dir, name string, data []byte, perm fs.FileMode) (changed bool, err error) {
	dst := filepath.Join(dir, name)
	if st, serr := os.Lstat(dst); serr == nil && st.Mode().IsRegular() && st.Mode().Perm() == perm && st.Size() == int64(len(data)) {
		if old, rerr := os.ReadFile(dst); rerr == nil && bytes.Equal(old, data) {
			return false, nil
		}
	}
	fail := func(step string, err error) error {
		return errors.Wrapf(ErrWrite, "%s %s: %v (is %s mounted read-write?)", step, dst, err, dir)
	}
	tmp, err := os.CreateTemp(dir, "."+name+tmpMarker)
	if err != nil {
		return false, fail("create a temporary file for", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return false, fail("write", err)
	}
	if err = tmp.Chmod(perm); err != nil {
		return false, fail("chmod", err)
	}
	if err = tmp.Sync(); err != nil {
		return false, fail("sync", err)
	}
	if err = tmp.Close(); err != nil {
		return false, fail("close", err)
	}
	if err = os.Rename(tmp.Name(), dst); err != nil {
		return false, fail("rename into", err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync() // the rename is durable once the directory is
		_ = d.Close()
	}
	return true, nil
}

// removeStaleTemps removes temporary files a crashed run of this package left in dir.
func removeStaleTemps(dir string, log *slog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), tmpMarker) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				log.Info("removed a temporary file left by an earlier run", "path", filepath.Join(dir, e.Name()))
			}
		}
	}
}

// firstConfig is the network configuration file a runtime would load from dir: the
// first *.conf, *.conflist or *.json in name order (libcni's ConfFiles, sorted).
func firstConfig(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var names []string
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".conf", ".conflist", ".json":
			if !e.IsDir() {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}
