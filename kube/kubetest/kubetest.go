// Package kubetest starts a real kube-apiserver for tests, backed by an embedded etcd
// from internal/etcdtest. The binaries (kube-apiserver, kubectl) are built from the Go
// module proxy by `make kube-bins` (module test/kube) and cached under
// ~/.cache/coil/kube/VERSION/, or taken from $COIL_KUBE_BINS. A test that needs them
// and cannot find them fails under CI (CI set in the environment) and skips loudly
// otherwise, like testutil.RequireRoot.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/coil-net/coil/internal/etcdtest"
)

// Version is the Kubernetes version the tests run against; `make kube-bins` builds it.
const Version = "v1.37.2"

// BinDir returns the directory holding kube-apiserver and kubectl: $COIL_KUBE_BINS, else
// ~/.cache/coil/kube/Version.
func BinDir() string {
	if d := os.Getenv("COIL_KUBE_BINS"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "coil", "kube", Version)
}

// RequireBinary returns the path of a cached Kubernetes binary, failing the test under
// CI and skipping it loudly otherwise when it is missing.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(BinDir(), name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s missing from %s (run `make kube-bins`)", name, BinDir())
	if os.Getenv("CI") != "" {
		t.Fatalf("TEST NOT RUN: %s", msg)
	}
	t.Skipf("SKIPPED (not a pass): %s", msg)
	return ""
}

// APIServer is a running kube-apiserver.
type APIServer struct {
	// URL is the https URL of the API server (self-signed certificate).
	URL string
	// Token is a bearer token of a cluster admin (group system:masters).
	Token string
	// Kubeconfig is the path of a kubeconfig file for the admin.
	Kubeconfig string
	// Etcd is the etcd the API server stores its objects in.
	Etcd *etcdtest.Cluster

	dir string
	t   testing.TB
}

// Start starts a kube-apiserver on a free loopback port with its own embedded etcd, and
// waits until /readyz answers (about 3 s). It is stopped (by PID) when the test ends.
func Start(t testing.TB) *APIServer {
	t.Helper()
	bin := RequireBinary(t, "kube-apiserver")
	e := etcdtest.Start(t, etcdtest.WithTCP())
	dir := t.TempDir()
	s := &APIServer{Etcd: e, dir: dir, t: t, Token: randHex(t, 16)}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	write(t, filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	write(t, filepath.Join(dir, "tokens.csv"), []byte(s.Token+",admin,admin-uid,system:masters\n"))
	port := freePort(t)
	started := time.Now()
	s.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	logPath := filepath.Join(dir, "kube-apiserver.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--etcd-servers="+strings.Join(e.Endpoints(), ","),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--authorization-mode=RBAC",
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--endpoint-reconciler-type=none",
		// No controller-manager runs to create the "default" ServiceAccount of new
		// namespaces; tests create pods directly.
		"--disable-admission-plugins=ServiceAccount",
		// As on real clusters (kubeadm sets it): coild runs privileged.
		"--allow-privileged=true",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start kube-apiserver: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID: the process this test started
		<-exited
		_ = logf.Close()
	})
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin, namespace: default}
current-context: test
`, s.URL, s.Token)
	s.Kubeconfig = filepath.Join(dir, "kubeconfig")
	write(t, s.Kubeconfig, []byte(kc))
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test server's self-signed cert
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("kube-apiserver exited during start:\n%s", tail(logPath))
		default:
		}
		if s.ready(hc) {
			t.Logf("kube-apiserver %s ready at %s in %s", Version, s.URL, time.Since(started).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready within 90 s:\n%s", tail(logPath))
		}
		select {
		case <-exited:
		case <-time.After(100 * time.Millisecond): // poll interval of the readiness probe
		}
	}
	return s
}

func (s *APIServer) ready(hc *http.Client) bool {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, s.URL+"/readyz", nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// RESTConfig is an admin client configuration.
func (s *APIServer) RESTConfig() *rest.Config {
	return &rest.Config{Host: s.URL, BearerToken: s.Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400}
}

// Client is an admin clientset.
func (s *APIServer) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// Kubectl runs kubectl against the server with the admin kubeconfig and returns its
// combined output.
func (s *APIServer) Kubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin := RequireBinary(t, "kubectl")
	cmd := exec.Command(bin, append([]string{"--kubeconfig", s.Kubeconfig}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Log returns the API server's log so far.
func (s *APIServer) Log() string { return tail(filepath.Join(s.dir, "kube-apiserver.log")) }

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}
