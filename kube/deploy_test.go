package kube_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/kube/kubetest"
)

func deployDir(t *testing.T) string {
	t.Helper()
	root, ok := testutil.RepoRoot()
	if !ok {
		t.Fatal("repository root not found")
	}
	return filepath.Join(root, "deploy")
}

// The manifests are accepted by a real API server (server-side dry run: schema,
// defaulting, admission), and the RBAC grants each service account what it needs and
// no more.
func TestManifestsServerDryRun(t *testing.T) {
	s := kubetest.Start(t)
	dir := deployDir(t)
	out, err := s.Kubectl(t, "apply", "--dry-run=server", "-k", dir)
	if err != nil {
		t.Fatalf("kubectl apply --dry-run=server -k deploy/: %v\n%s", err, out)
	}
	t.Logf("dry run:\n%s", out)
	for _, want := range []string{"daemonset.apps/coild", "deployment.apps/coil-controller", "configmap/coil-cni",
		"clusterrole.rbac.authorization.k8s.io/coil:coild", "role.rbac.authorization.k8s.io/coil:controller-leader-election"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run does not mention %s", want)
		}
	}

	// Apply the RBAC for real and ask the API server what each account may do.
	if out, err := s.Kubectl(t, "apply", "-f", filepath.Join(dir, "rbac.yaml"), "-n", "kube-system"); err != nil {
		t.Fatalf("apply rbac: %v\n%s", err, out)
	}
	coild := "system:serviceaccount:kube-system:coild"
	ctrl := "system:serviceaccount:kube-system:coil-controller"
	for _, tc := range []struct {
		as   string
		args []string
		want string
	}{
		{coild, []string{"list", "pods", "-A"}, "yes"},
		{coild, []string{"watch", "namespaces"}, "yes"},
		{coild, []string{"get", "nodes"}, "no"},
		{coild, []string{"update", "pods", "-n", "default"}, "no"},
		{coild, []string{"delete", "pods", "-n", "default"}, "no"},
		{coild, []string{"get", "secrets", "-n", "kube-system"}, "no"},
		{coild, []string{"create", "leases", "-n", "kube-system"}, "no"},
		{ctrl, []string{"watch", "nodes"}, "yes"},
		{ctrl, []string{"list", "nodes"}, "yes"},
		{ctrl, []string{"delete", "nodes"}, "no"},
		{ctrl, []string{"list", "pods", "-A"}, "no"},
		{ctrl, []string{"create", "leases", "-n", "kube-system"}, "yes"},
		{ctrl, []string{"update", "leases/coil-controller", "-n", "kube-system"}, "yes"},
		{ctrl, []string{"update", "leases/other", "-n", "kube-system"}, "no"},
		{ctrl, []string{"create", "leases", "-n", "default"}, "no"},
		{ctrl, []string{"get", "secrets", "-n", "kube-system"}, "no"},
	} {
		args := append([]string{"auth", "can-i", "--as", tc.as}, tc.args...)
		out, _ := s.Kubectl(t, args...) // exit 1 means "no"; warnings come first
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if got := lines[len(lines)-1]; got != tc.want {
			t.Errorf("%s can-i %v: %q, want %q", tc.as, tc.args, got, tc.want)
		}
	}
}

// The init container installs the plugin and the conflist by atomic rename and leaves
// every other file in the CNI directories alone; running it twice is fine.
func TestInstallStepKeepsOtherFiles(t *testing.T) {
	sh := testutil.RequireCommand(t, "sh")
	b, err := os.ReadFile(filepath.Join(deployDir(t), "coild.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatal(err)
	}
	var ic *corev1.Container
	for i := range ds.Spec.Template.Spec.InitContainers {
		if ds.Spec.Template.Spec.InitContainers[i].Name == "install-cni" {
			ic = &ds.Spec.Template.Spec.InitContainers[i]
		}
	}
	if ic == nil || len(ic.Command) != 3 {
		t.Fatalf("no install-cni init container with sh -ec SCRIPT: %+v", ic)
	}
	tmp := t.TempDir()
	bin, conf, cfg := filepath.Join(tmp, "bin"), filepath.Join(tmp, "net.d"), filepath.Join(tmp, "cfg")
	for _, d := range []string{bin, conf, cfg} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	plugin := filepath.Join(tmp, "coil-plugin")
	mustWrite(t, plugin, "#!/bin/sh\necho coil\n")
	mustWrite(t, filepath.Join(bin, "loopback"), "other plugin")
	mustWrite(t, filepath.Join(conf, "05-other.conflist"), "other config")
	mustWrite(t, filepath.Join(bin, "coil"), "old coil")
	conflist := conflistFromConfigMap(t)
	mustWrite(t, filepath.Join(cfg, "10-coil.conflist"), conflist)
	script := strings.NewReplacer("/host/opt/cni/bin", bin, "/host/etc/cni/net.d", conf,
		"/usr/local/bin/coil", plugin, "/etc/coil/cni", cfg).Replace(ic.Command[2])
	for range 2 {
		if out, err := exec.Command(sh, "-ec", script).CombinedOutput(); err != nil {
			t.Fatalf("install script: %v\n%s", err, out)
		}
	}
	for path, want := range map[string]string{
		filepath.Join(bin, "coil"):               "#!/bin/sh\necho coil\n",
		filepath.Join(bin, "loopback"):           "other plugin",
		filepath.Join(conf, "05-other.conflist"): "other config",
		filepath.Join(conf, "10-coil.conflist"):  conflist,
	} {
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s: %q %v, want %q", path, got, err, want)
		}
	}
	for _, d := range []string{bin, conf} {
		ents, _ := os.ReadDir(d)
		if len(ents) != 2 {
			t.Errorf("%s holds %d files, want 2 (no temporary files left)", d, len(ents))
		}
	}
	if st, err := os.Stat(filepath.Join(bin, "coil")); err != nil || st.Mode().Perm()&0o111 == 0 {
		t.Errorf("coil not executable: %v %v", st, err)
	}
}

// conflistFromConfigMap returns the conflist of deploy/config.yaml and checks it is a
// coil network configuration list.
func conflistFromConfigMap(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir(t), "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var cm corev1.ConfigMap
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatal(err)
		}
		if c, ok := cm.Data["10-coil.conflist"]; ok {
			var list struct {
				Name    string           `json:"name"`
				Plugins []map[string]any `json:"plugins"`
			}
			if err := json.Unmarshal([]byte(c), &list); err != nil {
				t.Fatalf("conflist is not JSON: %v", err)
			}
			if list.Name == "" || len(list.Plugins) != 1 || list.Plugins[0]["type"] != "coil" {
				t.Fatalf("conflist %+v is not a coil network", list)
			}
			return c
		}
	}
	t.Fatal("no 10-coil.conflist in deploy/config.yaml")
	return ""
}

func mustWrite(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
