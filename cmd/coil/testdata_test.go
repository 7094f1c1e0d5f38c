package main

import (
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/coil-net/coil/internal/testutil"
)

// TestExampleConfigs keeps the examples in testdata/cni valid.
func TestExampleConfigs(t *testing.T) {
	root := testutil.Root(t)
	files, err := libcni.ConfFiles(filepath.Join(root, "testdata", "cni"), []string{".conf", ".conflist"})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		var list *libcni.NetworkConfigList
		if filepath.Ext(f) == ".conf" {
			var c *libcni.PluginConfig
			if c, err = libcni.ConfFromFile(f); err == nil { //nolint:staticcheck // .conf files are still in the wild; the test reads them as runtimes do
				list, err = libcni.ConfListFromConf(c) //nolint:staticcheck // as above
			}
		} else {
			list, err = libcni.NetworkConfFromFile(f)
		}
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range list.Plugins {
			// Inject what the runtime adds, as libcni does.
			conf, err := libcni.InjectConf(p, map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
			if err != nil {
				t.Fatal(err)
			}
			if _, e := parseConfig(conf.Bytes); e != nil {
				t.Errorf("%s: %v", f, e)
			}
		}
	}
}
