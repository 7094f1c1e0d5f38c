package kube

import (
	"os"

	"github.com/cockroachdb/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/coil-net/coil/kube/annotation"
)

// PoolAnnotation is the pod and namespace annotation that names the pool a pod's
// addresses come from (parsed by package annotation).
const PoolAnnotation = annotation.Pool

// IPAnnotation is the pod annotation that asks for fixed addresses (parsed by package
// annotation).
const IPAnnotation = annotation.IP

// Sentinel errors.
var (
	// ErrDisabled: no kubeconfig was given and coild does not run in a pod.
	ErrDisabled = errors.New("kube: Kubernetes integration disabled")
	// ErrPodNotFound: the pod named by a CNI request does not exist (or exists with
	// another UID: a newer pod of the same name).
	ErrPodNotFound = errors.New("kube: pod not found")
	// ErrNamespaceNotFound: the pod's namespace does not exist.
	ErrNamespaceNotFound = errors.New("kube: namespace not found")
	// ErrNodeNotFound: the Node object coild looks for does not exist.
	ErrNodeNotFound = errors.New("kube: node not found")
	// ErrBadAnnotation: a pool annotation is present but empty or not a valid name.
	ErrBadAnnotation = errors.New("kube: invalid pool annotation")
	// ErrUnavailable: the API server could not be asked (network, authorization).
	ErrUnavailable = errors.New("kube: API server unavailable")
)

// RESTConfig returns the client configuration: from the kubeconfig file when one is
// given, else the in-cluster configuration when KUBERNETES_SERVICE_HOST is set (coild
// runs in a pod), else ErrDisabled.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, errors.Wrapf(err, "kubeconfig %s", kubeconfig)
		}
		return cfg, nil
	}
	if os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return nil, ErrDisabled
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, errors.Wrap(err, "in-cluster Kubernetes config")
	}
	return cfg, nil
}

// NewClient returns a clientset for cfg, with the user agent set to agent.
func NewClient(cfg *rest.Config, agent string) (kubernetes.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.UserAgent = agent
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, errors.Wrap(err, "Kubernetes client")
	}
	return cs, nil
}
