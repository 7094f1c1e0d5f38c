package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/internal/installcni"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// env returns the environment variable name's value, or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func run(args []string) int {
	var (
		cfg               installcni.Config
		plugins, conflist string
		logJSON           bool
	)
	cmd := &cobra.Command{
		Use:   "install-cni",
		Short: "Install Coil's CNI plugins and conflist on this node (atomically, leaving other files alone)",
		Long: `install-cni copies the CNI plugins (coil, portmap, bandwidth) from the image into the
host's CNI bin dir and writes the network configuration list into the host's CNI
configuration dir, each through a temporary file renamed into place. Files already
up to date are left alone; other files are never touched. Every flag can also be set
by the environment variable named in its help.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
			if logJSON {
				h = slog.NewJSONHandler(os.Stderr, nil)
			}
			cfg.Logger = slog.New(h)
			cfg.Plugins = nil
			for _, p := range strings.Split(plugins, ",") {
				if p = strings.TrimSpace(p); p != "" {
					cfg.Plugins = append(cfg.Plugins, p)
				}
			}
			if len(cfg.Plugins) == 0 {
				return errors.Wrap(installcni.ErrInvalidConfig, "--plugins is empty: name at least the coil plugin")
			}
			if conflist != "" {
				b, err := os.ReadFile(conflist)
				if err != nil {
					return errors.Wrapf(installcni.ErrInvalidConflist, "read the conflist to install: %v (is the ConfigMap coil-cni mounted?)", err)
				}
				cfg.Conflist, cfg.ConflistSource = b, conflist
			}
			_, err := installcni.Install(cfg)
			return err
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := cmd.Flags()
	f.StringVar(&cfg.BinDir, "cni-bin-dir", env("COIL_CNI_BIN_DIR", installcni.DefaultBinDir), "the host's CNI bin dir, as mounted ($COIL_CNI_BIN_DIR)")
	f.StringVar(&cfg.ConfDir, "cni-conf-dir", env("COIL_CNI_CONF_DIR", installcni.DefaultConfDir), "the host's CNI configuration dir, as mounted ($COIL_CNI_CONF_DIR)")
	f.StringVar(&cfg.PluginsDir, "plugins-dir", env("COIL_PLUGINS_DIR", installcni.DefaultPluginsDir), "where the plugins to install are ($COIL_PLUGINS_DIR)")
	f.StringVar(&plugins, "plugins", env("COIL_PLUGINS", strings.Join(installcni.DefaultPlugins, ",")), "plugins to install, comma-separated ($COIL_PLUGINS)")
	f.StringVar(&cfg.ConflistName, "conflist-name", env("COIL_CONFLIST_NAME", installcni.DefaultConflistName), "file name of the installed conflist ($COIL_CONFLIST_NAME)")
	f.StringVar(&conflist, "conflist", env("COIL_CONFLIST", ""), "file holding the conflist to install; empty: the built-in default ($COIL_CONFLIST)")
	f.StringVar(&cfg.Pool, "pool", env("COIL_POOL", ""), "set the coil plugin's \"pool\" in the installed conflist ($COIL_POOL)")
	f.StringVar(&cfg.Socket, "socket", env("COIL_SOCKET", ""), "set the coil plugin's \"socket\" in the installed conflist ($COIL_SOCKET)")
	f.BoolVar(&logJSON, "log-json", os.Getenv("COIL_LOG_JSON") == "true", "log JSON lines ($COIL_LOG_JSON=true)")
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "install-cni: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) || strings.Contains(err.Error(), "unknown command") || strings.Contains(err.Error(), "accepts 0 arg") {
			return 2
		}
		return 1
	}
	return 0
}

// usageError marks a bad command line (exit code 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }
