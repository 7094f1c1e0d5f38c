package kubelab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/coil-net/coil/lab"
)

// Sentinel errors of the package, checked with errors.Is.
var (
	ErrConfig   = errors.New("kubelab: invalid config")
	ErrKit      = errors.New("kubelab: missing binaries")
	ErrNotReady = errors.New("kubelab: not ready")
	ErrCommand  = errors.New("kubelab: command failed")
)

// Ports of the control plane inside the control-plane node's namespace.
const (
	APIServerPort = 6443
	EtcdPort      = 2379
	// ServiceCIDR is the API server's --service-cluster-ip-range (no kube-proxy runs: the
	// lab's pods reach the API server at its node address, see docs/kubernetes.md).
	ServiceCIDR = "10.96.0.0/16"
)

// Config describes a kubelet lab. Kit is required.
type Config struct {
	// Name is the lab name ([a-z0-9], at most 10 characters; default random):
	// lab.Sweep(ctx, Name) removes what a crashed run left.
	Name string
	// Nodes is the number of kubelet nodes (default 2). The lab has one node more, n0, for
	// the control plane (etcd, kube-apiserver, kube-scheduler, kube-controller-manager),
	// which peers over BGP too (it learns every block, so it reaches every pod).
	Nodes int
	// Kit locates the binaries (DefaultKit).
	Kit Kit
	// Images are imported into every node's containerd before its kubelet starts.
	Images Images
	// Dir is the work directory (default: a temporary one removed by Close).
	Dir string
	// KubeletArgs are added to every kubelet's command line (e.g. "--v=4").
	KubeletArgs []string
	// RuntimeOnly starts no control plane and no kubelet: the nodes run containerd only
	// (for crictl and critest, which talk CRI to the runtime directly).
	RuntimeOnly bool
	// Logger receives progress messages (default: discard).
	Logger *slog.Logger
}

// Cluster is a running control plane and its kubelet nodes. Close tears everything down.
type Cluster struct {
	Lab *lab.Lab
	// CP is the control-plane node (lab node n0).
	CP *lab.Node
	// Nodes are the kubelet nodes (lab nodes n1...), named as their lab node.
	Nodes []*Node
	// APIServer is the API server's URL inside the lab (https://<n0 address>:6443), what
	// kubelets and pods use; AdminKubeconfig reaches it from the caller's namespace
	// through a forwarder on a loopback port.
	APIServer       string
	AdminKubeconfig string
	// Etcd is the etcd URL inside the lab (https, client certificates); EtcdLocal reaches
	// it from the caller's namespace. EtcdCA/EtcdCert/EtcdKey are a client certificate
	// for it (Coil's, also given to coild through the Secret coil-etcd-tls).
	Etcd, EtcdLocal           string
	EtcdCA, EtcdCert, EtcdKey string
	Config                    Config

	log     *slog.Logger
	pki     *pki
	apiFwd  *lab.Forwarder
	etcdFwd *lab.Forwarder
	mu      sync.Mutex
	closed  bool
}

// Start creates the lab, the PKI, the control plane in n0 and Config.Nodes kubelet nodes,
// and waits until every node is registered (NotReady until a CNI plugin is installed:
// InstallCoil). On error everything is torn down.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 2
	}
	if cfg.Nodes < 1 || cfg.Nodes > 20 {
		return nil, errors.Wrapf(ErrConfig, "nodes %d out of range 1..20", cfg.Nodes)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Kit.check(!cfg.RuntimeOnly); err != nil {
		return nil, err
	}
	l, err := lab.Start(ctx, lab.Config{Nodes: cfg.Nodes + 1, Name: cfg.Name, Dir: cfg.Dir, DisableIPv6: true, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	c := &Cluster{Lab: l, CP: l.Nodes[0], Config: cfg, log: cfg.Logger.With("lab", l.Name)}
	if err := c.start(ctx); err != nil {
		return nil, lab.CloseAfter(err, c.Close)
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	t0 := time.Now()
	var err error
	c.pki, err = newPKI(filepath.Join(c.Lab.Dir, "pki"))
	if err != nil {
		return err
	}
	if !c.Config.RuntimeOnly {
		if err := c.startEtcd(ctx); err != nil {
			return err
		}
		if err := c.startAPIServer(ctx); err != nil {
			return err
		}
		c.log.Info("control plane API ready", "took", time.Since(t0).Round(time.Millisecond))
		if err := c.startComponents(ctx); err != nil {
			return err
		}
	}
	bctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := c.Lab.WaitBGPEstablished(bctx); err != nil {
		return err
	}
	for _, ln := range c.Lab.Nodes[1:] {
		n, err := c.startNode(ctx, ln)
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if c.Config.RuntimeOnly {
			break
		}
		if err := n.waitRegistered(ctx); err != nil {
			return err
		}
	}
	c.log.Info("kubelet nodes registered", "nodes", len(c.Nodes), "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

func (c *Cluster) cpAddr() string { return c.CP.FabricAddr.String() }

func (c *Cluster) startEtcd(ctx context.Context) error {
	ip := c.CP.FabricAddr.AsSlice()
	cert, key, err := c.pki.issue(certReq{name: "etcd-server", cn: "etcd", dns: []string{"localhost"},
		ips: []net.IP{ip, net.IPv4(127, 0, 0, 1)}, server: true, client: true})
	if err != nil {
		return err
	}
	c.EtcdCA = c.pki.CAFile
	if c.EtcdCert, c.EtcdKey, err = c.pki.issue(certReq{name: "etcd-client", cn: "coil", client: true}); err != nil {
		return err
	}
	c.Etcd = fmt.Sprintf("https://%s:%d", c.cpAddr(), EtcdPort)
	p, err := c.CP.StartProcess(ctx, c.Config.Kit.Bin("etcd"),
		"--name=cp", "--data-dir="+filepath.Join(c.CP.Dir, "etcd"),
		"--listen-client-urls="+c.Etcd+fmt.Sprintf(",https://127.0.0.1:%d", EtcdPort),
		"--advertise-client-urls="+c.Etcd,
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=cp=http://127.0.0.1:2380",
		"--cert-file="+cert, "--key-file="+key, "--trusted-ca-file="+c.pki.CAFile, "--client-cert-auth",
		// A throwaway lab: no fsync (the machine is small and shared).
		"--unsafe-no-fsync", "--log-level=warn",
	)
	if err != nil {
		return err
	}
	c.etcdFwd, err = c.CP.Forward(fmt.Sprintf("127.0.0.1:%d", EtcdPort))
	if err != nil {
		return err
	}
	c.EtcdLocal = "https://" + c.etcdFwd.Addr
	tc, err := c.tlsConfig(c.EtcdCert, c.EtcdKey)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	return c.waitHTTP(ctx, p, hc, c.EtcdLocal+"/health", 30*time.Second)
}

func (c *Cluster) tlsConfig(cert, key string) (*tls.Config, error) {
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, errors.Wrap(err, "kubelab: client certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.pki.ca)
	return &tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// waitHTTP polls url until it answers 200, failing early if p exits.
func (c *Cluster) waitHTTP(ctx context.Context, p *lab.Process, hc *http.Client, url string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last string
	for {
		select {
		case <-p.Done():
			return errors.Wrapf(ErrNotReady, "%s exited (%v): %s", p.Name, p.Err(), lab.Tail(p.LogPath, 30))
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return errors.Wrap(err, "kubelab: request")
		}
		resp, err := hc.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return errors.Wrapf(ErrNotReady, "%s: %s not ready (%v, last: %s): %s", p.Name, url, ctx.Err(), last, lab.Tail(p.LogPath, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	dir := filepath.Join(c.CP.Dir, "apiserver")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return errors.Wrap(err, "kubelab: apiserver dir")
	}
	ip := c.CP.FabricAddr.AsSlice()
	serving, servingKey, err := c.pki.issue(certReq{name: "apiserver", cn: "kube-apiserver",
		dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips: []net.IP{ip, net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)}, server: true})
	if err != nil {
		return err
	}
	kubeletClient, kubeletClientKey, err := c.pki.issue(certReq{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true})
	if err != nil {
		return err
	}
	saKey, saPub, err := c.pki.serviceAccountKeys()
	if err != nil {
		return err
	}
	c.APIServer = fmt.Sprintf("https://%s:%d", c.cpAddr(), APIServerPort)
	p, err := c.CP.StartProcess(ctx, c.Config.Kit.Kube("kube-apiserver"),
		fmt.Sprintf("--etcd-servers=https://127.0.0.1:%d", EtcdPort),
		"--etcd-cafile="+c.pki.CAFile, "--etcd-certfile="+c.EtcdCert, "--etcd-keyfile="+c.EtcdKey,
		"--bind-address=0.0.0.0", "--advertise-address="+c.cpAddr(), fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--tls-cert-file="+serving, "--tls-private-key-file="+servingKey,
		"--client-ca-file="+c.pki.CAFile,
		"--kubelet-client-certificate="+kubeletClient, "--kubelet-client-key="+kubeletClientKey,
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--allow-privileged=true",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	c.apiFwd, err = c.CP.Forward(fmt.Sprintf("127.0.0.1:%d", APIServerPort))
	if err != nil {
		return err
	}
	adminCert, adminKey, err := c.pki.issue(certReq{name: "admin", cn: "admin", orgs: []string{"system:masters"}, client: true})
	if err != nil {
		return err
	}
	c.AdminKubeconfig = filepath.Join(c.Lab.Dir, "admin.kubeconfig")
	if kcErr := c.pki.kubeconfig(c.AdminKubeconfig, "https://"+c.apiFwd.Addr, adminCert, adminKey); kcErr != nil {
		return kcErr
	}
	tc, err := c.tlsConfig(adminCert, adminKey)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	return c.waitHTTP(ctx, p, hc, "https://"+c.apiFwd.Addr+"/readyz", 120*time.Second)
}

// startComponents starts kube-controller-manager and kube-scheduler in n0, each with its
// own client certificate (the identities the API server's bootstrap RBAC knows).
func (c *Cluster) startComponents(ctx context.Context) error {
	local := fmt.Sprintf("https://127.0.0.1:%d", APIServerPort)
	for _, comp := range []struct{ bin, user string }{
		{"kube-controller-manager", "system:kube-controller-manager"},
		{"kube-scheduler", "system:kube-scheduler"},
	} {
		cert, key, err := c.pki.issue(certReq{name: comp.bin, cn: comp.user, client: true})
		if err != nil {
			return err
		}
		kc := filepath.Join(c.CP.Dir, comp.bin+".kubeconfig")
		if err := c.pki.kubeconfig(kc, local, cert, key); err != nil {
			return err
		}
		args := []string{"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false"}
		if comp.bin == "kube-controller-manager" {
			args = append(args,
				"--use-service-account-credentials=true",
				"--service-account-private-key-file="+filepath.Join(c.pki.Dir, "sa.key"),
				"--root-ca-file="+c.pki.CAFile,
				// A node whose kubelet stopped is NotReady after this, its pods evicted later
				// (kubectl delete node is what reclaims its blocks).
				"--node-monitor-grace-period=20s",
			)
		}
		if _, err := c.CP.StartProcess(ctx, c.Config.Kit.Kube(comp.bin), args...); err != nil {
			return err
		}
	}
	return nil
}

// RESTConfig is an admin client configuration (through the forwarder).
func (c *Cluster) RESTConfig() *rest.Config {
	return &rest.Config{
		Host: "https://" + c.apiFwd.Addr,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile: c.pki.CAFile, CertFile: filepath.Join(c.pki.Dir, "admin.crt"), KeyFile: filepath.Join(c.pki.Dir, "admin.key"),
		},
		QPS: 100, Burst: 200,
	}
}

// Client is an admin clientset.
func (c *Cluster) Client() (kubernetes.Interface, error) {
	cs, err := kubernetes.NewForConfig(c.RESTConfig())
	return cs, errors.Wrap(err, "kubelab: client")
}

// Kubectl runs kubectl as the admin and returns its stdout; a failure carries stderr.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, nil, c.Config.Kit.Kube("kubectl"), append([]string{"--kubeconfig", c.AdminKubeconfig}, args...)...)
}

// KubectlStdin is Kubectl with stdin.
func (c *Cluster) KubectlStdin(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	return run(ctx, stdin, c.Config.Kit.Kube("kubectl"), append([]string{"--kubeconfig", c.AdminKubeconfig}, args...)...)
}

// Coilctl runs bin/coilctl against the cluster's etcd (through the forwarder) and returns
// its stdout.
func (c *Cluster) Coilctl(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, nil, c.Config.Kit.Bin("coilctl"), append([]string{"--etcd-endpoints", c.EtcdLocal,
		"--etcd-cacert", c.EtcdCA, "--etcd-cert", c.EtcdCert, "--etcd-key", c.EtcdKey}, args...)...)
}

// Close stops the kubelet nodes (kubelet first, then everything in their cgroups), the
// control plane and the lab. Idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	var err error
	for _, n := range c.Nodes {
		if n.kubelet != nil {
			_ = n.kubelet.Stop()
		}
	}
	for _, f := range []*lab.Forwarder{c.apiFwd, c.etcdFwd} {
		if f != nil {
			_ = f.Close()
		}
	}
	if c.Lab != nil {
		err = c.Lab.Close()
	}
	return err
}

func run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), errors.Wrapf(errors.Mark(err, ErrCommand), "kubelab: %s %s: %s",
			filepath.Base(name), strings.Join(args, " "), strings.TrimSpace(stderr.String()+" "+stdout.String()))
	}
	return stdout.Bytes(), nil
}
