package kube_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/images"
	"github.com/coil-net/coil/internal/installcni"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/kube/kubetest"
)

func deployDir(t *testing.T) string {
	t.Helper()
	root := testutil.Root(t)
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
		{coild, []string{"get", "nodes"}, "yes"},   // its Node object's labels (pool node selectors)
		{coild, []string{"watch", "nodes"}, "yes"}, // its informer on its own Node object
		{coild, []string{"list", "nodes"}, "yes"},
		{coild, []string{"update", "nodes"}, "no"},
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

// The init container runs install-cni (no shell: the image has none) with the args of
// the manifest: run as a node would, with the host directories and the ConfigMap in
// temporary directories, twice, it installs the three plugins and the ConfigMap's
// conflist and leaves every other file alone.
func TestInstallStepKeepsOtherFiles(t *testing.T) {
	ds := daemonSet(t, readManifests(t, deployDir(t)))
	var ic *corev1.Container
	for i := range ds.Spec.Template.Spec.InitContainers {
		if ds.Spec.Template.Spec.InitContainers[i].Name == "install-cni" {
			ic = &ds.Spec.Template.Spec.InitContainers[i]
		}
	}
	if ic == nil || len(ic.Command) != 1 || ic.Command[0] != images.BinDir+"/install-cni" {
		t.Fatalf("install-cni init container %+v: want command [%s/install-cni]", ic, images.BinDir)
	}
	tmp := t.TempDir()
	bin, conf, cfg, plugins := filepath.Join(tmp, "bin"), filepath.Join(tmp, "net.d"), filepath.Join(tmp, "cfg"), filepath.Join(tmp, "plugins")
	for _, d := range []string{bin, conf, cfg, plugins} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	installer := filepath.Join(tmp, "install-cni")
	if err := gobuild.Build(context.Background(), installer, "./cmd/install-cni", true); err != nil {
		t.Fatal(err)
	}
	for _, p := range installcni.DefaultPlugins {
		if err := os.WriteFile(filepath.Join(plugins, p), []byte("plugin "+p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, filepath.Join(bin, "loopback"), "other plugin")
	mustWrite(t, filepath.Join(conf, "99-other.conflist"), "other config")
	mustWrite(t, filepath.Join(bin, "coil"), "old coil")
	conflist := conflistFromConfigMap(t)
	mustWrite(t, filepath.Join(cfg, "10-coil.conflist"), conflist)
	// The container's paths, mapped to this test's directories.
	mounts := map[string]string{}
	for _, m := range ic.VolumeMounts {
		switch m.Name {
		case "cni-bin":
			mounts[m.MountPath] = bin
		case "cni-conf":
			mounts[m.MountPath] = conf
		case "coil-cni":
			mounts[m.MountPath] = cfg
		default:
			t.Errorf("unexpected mount %s in install-cni", m.Name)
		}
	}
	var args []string
	for _, a := range ic.Args {
		for from, to := range mounts {
			a = strings.Replace(a, "="+from, "="+to, 1)
		}
		args = append(args, a)
	}
	args = append(args, "--plugins-dir", plugins)
	for range 2 {
		if out, err := exec.Command(installer, args...).CombinedOutput(); err != nil {
			t.Fatalf("install-cni %q: %v\n%s", args, err, out)
		}
	}
	want := map[string]string{
		filepath.Join(bin, "loopback"):           "other plugin",
		filepath.Join(conf, "99-other.conflist"): "other config",
		filepath.Join(conf, "10-coil.conflist"):  conflist,
	}
	for _, p := range installcni.DefaultPlugins {
		want[filepath.Join(bin, p)] = "plugin " + p
	}
	for path, w := range want {
		got, err := os.ReadFile(path)
		if err != nil || string(got) != w {
			t.Errorf("%s: %q %v, want %q", path, got, err, w)
		}
	}
	for d, n := range map[string]int{bin: 4, conf: 2} {
		ents, _ := os.ReadDir(d)
		if len(ents) != n {
			t.Errorf("%s holds %d files, want %d (no temporary files left)", d, len(ents), n)
		}
	}
	if st, err := os.Stat(filepath.Join(bin, "coil")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("coil not executable: %v %v", st, err)
	}
}

// The rendered manifests (kubectl kustomize): every container runs the one image, named
// with the VERSION file's tag; coild sees every netns path a runtime may pass (/run and
// /var/run/netns with HostToContainer propagation, hostPID for /proc/PID/ns/net); an
// overlay's images entry (what `kustomize edit set image` writes) changes every container.
func TestManifestsRendered(t *testing.T) {
	kubectl := kubetest.RequireBinary(t, "kubectl")
	root := filepath.Dir(deployDir(t))
	version, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	tag := strings.TrimSpace(string(version))
	objs := kustomize(t, kubectl, deployDir(t))
	if got := containerImages(objs); got != "coil-controller:coil-controller="+images.CoilRepo+":"+tag+
		" coild:coild="+images.CoilRepo+":"+tag+" coild:install-cni="+images.CoilRepo+":"+tag {
		t.Errorf("images %s, want %s:%s everywhere", got, images.CoilRepo, tag)
	}

	ds := daemonSet(t, objs)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || !spec.HostPID {
		t.Errorf("hostNetwork %v hostPID %v, want both (hostPID: /proc/PID/ns/net paths)", spec.HostNetwork, spec.HostPID)
	}
	vols := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			vols[v.Name] = v.HostPath.Path
		}
	}
	var coild *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "coild" {
			coild = &spec.Containers[i]
		}
	}
	if coild == nil {
		t.Fatal("no coild container")
	}
	seen := map[string]bool{}
	for _, m := range coild.VolumeMounts {
		host := vols[m.Name]
		if host == "" {
			continue
		}
		if m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
			t.Errorf("coild mounts %s at %s without mountPropagation HostToContainer: namespaces mounted later would not show", host, m.MountPath)
		}
		if m.MountPath != host {
			t.Errorf("coild mounts host %s at %s: a netns path must mean the same inside", host, m.MountPath)
		}
		seen[m.MountPath] = true
	}
	for _, p := range []string{"/run", "/var/run/netns"} {
		if !seen[p] {
			t.Errorf("coild does not mount the host's %s", p)
		}
	}
	if sc := coild.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Error("coild is not privileged")
	}

	// An overlay, as `kustomize edit set image ghcr.io/coil-net/coil=...` leaves it.
	overlay := t.TempDir()
	rel, err := filepath.Rel(overlay, deployDir(t))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(overlay, "kustomization.yaml"), "resources:\n- "+rel+"\nimages:\n- name: "+images.CoilRepo+
		"\n  newName: registry.example.com:5000/coil\n  newTag: \"7.7\"\n")
	want := "coil-controller:coil-controller=registry.example.com:5000/coil:7.7 coild:coild=registry.example.com:5000/coil:7.7 coild:install-cni=registry.example.com:5000/coil:7.7"
	if got := containerImages(kustomize(t, kubectl, overlay)); got != want {
		t.Errorf("overlay images %s, want %s", got, want)
	}
}

// kustomize renders dir with kubectl kustomize and decodes each object.
func kustomize(t *testing.T, kubectl, dir string) []map[string]any {
	t.Helper()
	out, err := exec.Command(kubectl, "kustomize", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var objs []map[string]any
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered YAML: %v", err)
		}
		objs = append(objs, o)
	}
	return objs
}

// readManifests decodes the YAML files of deploy/ as they are (no kustomize).
func readManifests(t *testing.T, dir string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, f := range []string{"coild.yaml", "controller.yaml", "config.yaml", "rbac.yaml"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "\n---\n") {
			var o map[string]any
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func daemonSet(t *testing.T, objs []map[string]any) *appsv1.DaemonSet {
	t.Helper()
	for _, o := range objs {
		if o["kind"] == "DaemonSet" {
			b, _ := json.Marshal(o)
			var ds appsv1.DaemonSet
			if err := json.Unmarshal(b, &ds); err != nil {
				t.Fatal(err)
			}
			return &ds
		}
	}
	t.Fatal("no DaemonSet")
	return nil
}

// containerImages lists "OBJECT:CONTAINER=IMAGE" for every container and init container
// of the DaemonSets and Deployments, sorted.
func containerImages(objs []map[string]any) string {
	var out []string
	for _, o := range objs {
		if o["kind"] != "DaemonSet" && o["kind"] != "Deployment" {
			continue
		}
		b, _ := json.Marshal(o)
		var d appsv1.Deployment // the pod template is at the same place in both
		_ = json.Unmarshal(b, &d)
		name := d.Name
		for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
			out = append(out, name+":"+c.Name+"="+c.Image)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
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
			if list.Name == "" || len(list.Plugins) == 0 || list.Plugins[0]["type"] != "coil" {
				t.Fatalf("conflist %+v is not a coil network", list)
			}
			if c != installcni.DefaultConflist {
				t.Errorf("the ConfigMap's conflist differs from install-cni's default (internal/installcni.DefaultConflist):\n%s\nwant\n%s", c, installcni.DefaultConflist)
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
