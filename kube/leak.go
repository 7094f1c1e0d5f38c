package kube

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	corev1 "k8s.io/api/core/v1"
)

// Pods is what the leak collector reads: the informer cache (first observation) and the
// API server (second, fresh observation). *PodCache implements it.
type Pods interface {
	// Synced reports whether the cache has listed once; before that a pod missing from
	// it means nothing.
	Synced() bool
	// CachedPod returns the pod of that name from the cache, or nil.
	CachedPod(namespace, name string) *corev1.Pod
	// GetPod reads the pod from the API server: ErrPodNotFound when it does not exist.
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// Attachment is an address holder as the log records it.
type Attachment struct {
	ContainerID string
	IfName      string
	Pod         PodRef
}

// Leak is an attachment whose pod is confirmed gone.
type Leak struct {
	Attachment
	// Kind is "pod_deleted" (no pod of that name) or "pod_replaced" (a pod of that
	// name with another UID: the recorded pod was deleted and recreated).
	Kind string
	// Reason is the text recorded in the AddressReleased event.
	Reason string
}

// LeakConfig configures a LeakCollector.
type LeakConfig struct {
	Pods Pods
	// Grace is how long a pod must have been seen missing before the fresh re-check
	// (default 1 minute).
	Grace time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// LeakCollector finds attachments whose pod no longer exists. An attachment is leaked
// only when (1) the informer cache, synced, has no pod of that name and UID, first seen
// so at least Grace ago and still so now, and (2) a fresh GET from the API server then
// finds no pod of that name, or one with another UID. A pod that exists is never reported.
// Attachments without a pod name (not made for a Kubernetes pod) and, for safety,
// attachments without a UID whose pod name exists, are never reported. Safe for
// concurrent use.
type LeakCollector struct {
	cfg LeakConfig

	mu       sync.Mutex
	suspects map[attKey]time.Time // first seen missing from the cache
}

type attKey struct{ containerID, ifName string }

// NewLeakCollector returns a collector.
func NewLeakCollector(cfg LeakConfig) *LeakCollector {
	if cfg.Grace <= 0 {
		cfg.Grace = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &LeakCollector{cfg: cfg, suspects: map[attKey]time.Time{}}
}

// matches reports whether pod is the attachment's pod.
func matches(pod *corev1.Pod, ref PodRef) bool {
	return pod != nil && (ref.UID == "" || string(pod.UID) == ref.UID)
}

// Suspects is the number of attachments seen missing and waiting out the grace period.
func (l *LeakCollector) Suspects() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.suspects)
}

// Check looks at the node's attachments and returns those confirmed leaked. Each call
// is one observation of the cache; an attachment is re-checked against the API server
// only once it has been missing for Grace. API errors leave the attachment a suspect
// (checked again next time) and are returned combined.
func (l *LeakCollector) Check(ctx context.Context, atts []Attachment) ([]Leak, error) {
	if !l.cfg.Pods.Synced() {
		return nil, nil
	}
	now := l.cfg.Now()
	var confirm []Attachment
	l.mu.Lock()
	seen := map[attKey]bool{}
	for _, a := range atts {
		if a.Pod.Name == "" || a.Pod.Namespace == "" {
			continue
		}
		k := attKey{a.ContainerID, a.IfName}
		if matches(l.cfg.Pods.CachedPod(a.Pod.Namespace, a.Pod.Name), a.Pod) {
			continue
		}
		seen[k] = true
		first, ok := l.suspects[k]
		if !ok {
			l.suspects[k] = now
			continue
		}
		if now.Sub(first) >= l.cfg.Grace {
			confirm = append(confirm, a)
		}
	}
	for k := range l.suspects {
		if !seen[k] {
			delete(l.suspects, k) // its pod is back in the cache, or the attachment is gone
		}
	}
	l.mu.Unlock()

	var leaks []Leak
	var errs error
	for _, a := range confirm {
		pod, err := l.cfg.Pods.GetPod(ctx, a.Pod.Namespace, a.Pod.Name)
		switch {
		case errors.Is(err, ErrPodNotFound):
			leaks = append(leaks, Leak{Attachment: a, Kind: "pod_deleted", Reason: "pod " + a.Pod.String() + " deleted: leaked address"})
		case err != nil:
			errs = errors.CombineErrors(errs, err)
			continue
		case matches(pod, a.Pod):
			// The cache lags; the pod exists. Not a leak: start over.
		default:
			leaks = append(leaks, Leak{Attachment: a, Kind: "pod_replaced",
				Reason: "pod " + a.Pod.String() + " deleted (a new pod of that name has UID " + string(pod.UID) + "): leaked address"})
		}
		l.mu.Lock()
		delete(l.suspects, attKey{a.ContainerID, a.IfName})
		l.mu.Unlock()
	}
	return leaks, errs
}
