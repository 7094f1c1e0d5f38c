package kube

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/coil-net/coil/kube/annotation"
)

// PodRef identifies a pod as a CNI request names it (CNI_ARGS K8S_POD_NAMESPACE,
// K8S_POD_NAME, K8S_POD_UID). UID may be empty (an older runtime).
type PodRef struct {
	Namespace string
	Name      string
	UID       string
}

func (r PodRef) String() string {
	s := r.Namespace + "/" + r.Name
	if r.UID != "" {
		s += " (" + r.UID + ")"
	}
	return s
}

// Source says where a pool choice came from.
type Source string

// The sources of a pool choice, in order of precedence.
const (
	SourcePodAnnotation       Source = "pod annotation " + PoolAnnotation
	SourceNamespaceAnnotation Source = "namespace annotation " + PoolAnnotation
	SourceNetConf             Source = "network config \"pool\""
	SourceDefault             Source = "coild --default-pool"
)

// Selection is the pool chosen for a pod, with where the choice came from and the
// pod's UID when known.
type Selection struct {
	Pool   string
	Source Source
	PodUID string
	// FixedIPs are the addresses the pod's annotation coil.cybozu.com/ip asks for
	// (annotation.ParseIPs); nil without it.
	FixedIPs []netip.Addr
	// Fallbacks are the pools the sources after Source name, in precedence order
	// (namespace annotation, network config, default; each once, Pool left out): where
	// an ADD goes when Pool is disabled (coilctl pool disable). An invalid namespace
	// annotation is left out here (it is refused only when it is the choice).
	Fallbacks []string
}

// SelectPool applies the precedence: pod annotation, namespace annotation, network
// config, default. pod and ns may be nil (not a Kubernetes pod). It never looks at
// whether the pool exists: a chosen pool that does not exist must be reported as an
// error, not replaced by the next source. A present but invalid annotation (empty, not
// a pool name) is ErrBadAnnotation.
func SelectPool(pod *corev1.Pod, ns *corev1.Namespace, netconfPool, defaultPool string) (Selection, error) {
	sel, err := selectPool(pod, ns, netconfPool, defaultPool)
	if err != nil {
		return sel, err
	}
	// The pools of the sources after the chosen one, for a disabled pool.
	var later []string
	if sel.Source == SourcePodAnnotation && ns != nil {
		if v, ok := ns.Annotations[PoolAnnotation]; ok {
			if p, err := annotation.ParsePool(v); err == nil {
				later = append(later, p)
			}
		}
	}
	if sel.Source == SourcePodAnnotation || sel.Source == SourceNamespaceAnnotation {
		later = append(later, netconfPool)
	}
	if sel.Source != SourceDefault {
		later = append(later, defaultPool)
	}
	for _, p := range later {
		if p != "" && p != sel.Pool && !slices.Contains(sel.Fallbacks, p) {
			sel.Fallbacks = append(sel.Fallbacks, p)
		}
	}
	if pod == nil {
		return sel, nil
	}
	if v, ok := pod.Annotations[IPAnnotation]; ok {
		ips, err := annotation.ParseIPs(v)
		if err != nil {
			return Selection{}, errors.Mark(errors.Wrap(err, "pod "+pod.Namespace+"/"+pod.Name), ErrBadAnnotation)
		}
		sel.FixedIPs = ips
	}
	return sel, nil
}

func selectPool(pod *corev1.Pod, ns *corev1.Namespace, netconfPool, defaultPool string) (Selection, error) {
	if pod != nil {
		if v, ok := pod.Annotations[PoolAnnotation]; ok {
			return annotated(v, SourcePodAnnotation, "pod "+pod.Namespace+"/"+pod.Name, string(pod.UID))
		}
	}
	uid := ""
	if pod != nil {
		uid = string(pod.UID)
	}
	if ns != nil {
		if v, ok := ns.Annotations[PoolAnnotation]; ok {
			return annotated(v, SourceNamespaceAnnotation, "namespace "+ns.Name, uid)
		}
	}
	if netconfPool != "" {
		return Selection{Pool: netconfPool, Source: SourceNetConf, PodUID: uid}, nil
	}
	return Selection{Pool: defaultPool, Source: SourceDefault, PodUID: uid}, nil
}

func annotated(v string, src Source, obj, uid string) (Selection, error) {
	pool, err := annotation.ParsePool(v)
	if err != nil {
		return Selection{}, errors.Mark(errors.Wrap(err, obj), ErrBadAnnotation)
	}
	return Selection{Pool: pool, Source: src, PodUID: uid}, nil
}

// PodCacheConfig configures a PodCache.
type PodCacheConfig struct {
	Client kubernetes.Interface
	// Node restricts the pod informer to pods scheduled on this node.
	Node string
	// OnPodDeleted, when set, is called (from the informer's goroutine; do not block)
	// after a pod of the node is deleted.
	OnPodDeleted func(PodRef)
	// OnNodeLabels, when set, is called (from the informer's goroutine; do not block)
	// when the Node object named Node appears or its labels change.
	OnNodeLabels func()
	// Timeout bounds each direct API call (default 5 s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// PodCache is coild's view of Kubernetes: informers on the node's pods, on all
// namespaces and on the node's own Node object. Reads come from the caches; a pod,
// namespace or node missing from a cache (not synced yet, or just created) is read from
// the API server.
type PodCache struct {
	cfg      PodCacheConfig
	log      *slog.Logger
	pods     informers.SharedInformerFactory
	nss      informers.SharedInformerFactory
	nodes    informers.SharedInformerFactory
	podList  corelisters.PodLister
	nsList   corelisters.NamespaceLister
	nodeList corelisters.NodeLister
	podInf   cache.SharedIndexInformer
	nsInf    cache.SharedIndexInformer
	nodeInf  cache.SharedIndexInformer
	synced   atomic.Bool
}

// NewPodCache prepares the informers; Run starts them.
func NewPodCache(cfg PodCacheConfig) *PodCache {
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &PodCache{cfg: cfg, log: cfg.Logger}
	sel := fields.OneTermEqualSelector("spec.nodeName", cfg.Node).String()
	c.pods = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = sel }))
	c.nss = informers.NewSharedInformerFactory(cfg.Client, 0)
	c.podInf = c.pods.Core().V1().Pods().Informer()
	c.podList = c.pods.Core().V1().Pods().Lister()
	c.nsInf = c.nss.Core().V1().Namespaces().Informer()
	c.nsList = c.nss.Core().V1().Namespaces().Lister()
	// The node's own Node object only (a watch of one object, as the kubelet keeps):
	// its labels select pools, and a change is seen at once instead of polled.
	nodeSel := fields.OneTermEqualSelector("metadata.name", cfg.Node).String()
	c.nodes = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = nodeSel }))
	c.nodeInf = c.nodes.Core().V1().Nodes().Informer()
	c.nodeList = c.nodes.Core().V1().Nodes().Lister()
	if cfg.OnNodeLabels != nil {
		_, _ = c.nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { cfg.OnNodeLabels() },
			UpdateFunc: func(old, cur any) {
				o, ok1 := old.(*corev1.Node)
				n, ok2 := cur.(*corev1.Node)
				if !ok1 || !ok2 || !maps.Equal(o.Labels, n.Labels) {
					cfg.OnNodeLabels()
				}
			},
		})
	}
	if cfg.OnPodDeleted != nil {
		_, _ = c.podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				if p, ok := obj.(*corev1.Pod); ok {
					cfg.OnPodDeleted(PodRef{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID)})
				}
			},
		})
	}
	return c
}

// Run runs the informers until ctx ends. It does not wait for their first list; see
// WaitSynced.
func (c *PodCache) Run(ctx context.Context) {
	c.pods.Start(ctx.Done())
	c.nss.Start(ctx.Done())
	c.nodes.Start(ctx.Done())
	if cache.WaitForCacheSync(ctx.Done(), c.podInf.HasSynced, c.nsInf.HasSynced) {
		c.synced.Store(true)
		c.log.Info("Kubernetes informers synced", "pods", len(c.podInf.GetStore().ListKeys()), "namespaces", len(c.nsInf.GetStore().ListKeys()))
	}
	<-ctx.Done()
	c.pods.Shutdown()
	c.nss.Shutdown()
	c.nodes.Shutdown()
}

// Synced reports whether the pod and namespace informers have listed once (the Node
// informer is not waited for: until it has listed, NodeLabels asks the API server).
func (c *PodCache) Synced() bool { return c.synced.Load() }

// WaitSynced waits until Synced or ctx ends.
func (c *PodCache) WaitSynced(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), c.podInf.HasSynced, c.nsInf.HasSynced) {
		return errors.Wrap(ctx.Err(), "kube: wait for informers")
	}
	return nil
}

// CachedPod returns the pod from the informer cache (first observation for the leak
// collector): nil when the cache holds no pod of that name.
func (c *PodCache) CachedPod(namespace, name string) *corev1.Pod {
	p, err := c.podList.Pods(namespace).Get(name)
	if err != nil {
		return nil
	}
	return p
}

// GetPod reads the pod from the API server, not the cache. A missing pod is
// ErrPodNotFound; any other failure ErrUnavailable.
func (c *PodCache) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return getObject(ctx, c.cfg.Timeout, ErrPodNotFound, "pod "+namespace+"/"+name, func(ctx context.Context) (*corev1.Pod, error) {
		return c.cfg.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	})
}

// getObject reads one object from the API server (get, within timeout). A missing object
// wraps notFound, any other failure ErrUnavailable; what names the object in the message
// ("pod NS/NAME"). GetPod, namespace and NodeLabels read through it.
func getObject[T any](ctx context.Context, timeout time.Duration, notFound error, what string, get func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	obj, err := get(ctx)
	var zero T
	switch {
	case apierrors.IsNotFound(err):
		return zero, errors.Wrapf(notFound, "%s", what)
	case err != nil:
		return zero, errors.Wrapf(ErrUnavailable, "get %s: %v", what, err)
	}
	return obj, nil
}

// pod finds ref: the cache first, the API server when the cache has no pod of that
// name and UID. A pod of that name with another UID is ErrPodNotFound.
func (c *PodCache) pod(ctx context.Context, ref PodRef) (*corev1.Pod, error) {
	if p := c.CachedPod(ref.Namespace, ref.Name); p != nil && (ref.UID == "" || string(p.UID) == ref.UID) {
		return p, nil
	}
	p, err := c.GetPod(ctx, ref.Namespace, ref.Name)
	if err != nil {
		return nil, err
	}
	if ref.UID != "" && string(p.UID) != ref.UID {
		return nil, errors.Wrapf(ErrPodNotFound, "pod %s: the pod of that name now has UID %s", ref, p.UID)
	}
	return p, nil
}

// namespace finds a namespace: the cache first, else the API server.
func (c *PodCache) namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if ns, err := c.nsList.Get(name); err == nil {
		return ns, nil
	}
	return getObject(ctx, c.cfg.Timeout, ErrNamespaceNotFound, "namespace "+name, func(ctx context.Context) (*corev1.Namespace, error) {
		return c.cfg.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	})
}

// ResolvePool chooses the pool for a CNI ADD (see SelectPool for the order). With no
// pod name (not a Kubernetes pod, e.g. cnitool), only netconfPool and defaultPool
// count. The pod's UID is filled from the pod when ref has none. Errors:
// ErrPodNotFound, ErrNamespaceNotFound, ErrBadAnnotation, ErrUnavailable; never a
// silent fallback to a later source.
func (c *PodCache) ResolvePool(ctx context.Context, ref PodRef, netconfPool, defaultPool string) (Selection, error) {
	if ref.Name == "" || ref.Namespace == "" {
		return SelectPool(nil, nil, netconfPool, defaultPool)
	}
	pod, err := c.pod(ctx, ref)
	if err != nil {
		return Selection{}, err
	}
	var ns *corev1.Namespace
	if _, ok := pod.Annotations[PoolAnnotation]; !ok {
		if ns, err = c.namespace(ctx, ref.Namespace); err != nil {
			return Selection{}, err
		}
	} else if cached, err := c.nsList.Get(ref.Namespace); err == nil {
		ns = cached // for the fallbacks only: from the cache, never an API call
	}
	return SelectPool(pod, ns, netconfPool, defaultPool)
}

// NodeLabels returns the labels of Node object name (a copy): the node's own from the
// Node informer once it has listed, else (not listed yet, another node, or not in its
// cache) from the API server (coild's ClusterRole may get, list and watch nodes). A
// missing node is ErrNodeNotFound; any other failure ErrUnavailable.
func (c *PodCache) NodeLabels(ctx context.Context, name string) (map[string]string, error) {
	if name == c.cfg.Node && c.nodeInf.HasSynced() {
		if n, err := c.nodeList.Get(name); err == nil {
			return maps.Clone(n.Labels), nil
		}
	}
	n, err := getObject(ctx, c.cfg.Timeout, ErrNodeNotFound, "node "+name, func(ctx context.Context) (*corev1.Node, error) {
		return c.cfg.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	})
	if err != nil {
		return nil, err
	}
	return n.Labels, nil
}

// UID is a pod UID as a string (types.UID is a string type).
func UID(u types.UID) string { return string(u) }
