package kube

import (
	"context"

	"github.com/cockroachdb/errors"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// PodState is what the API server says of a pod an attachment records.
type PodState string

// The states LookupPod reports.
const (
	// PodExists: a pod of that namespace and name exists, with the recorded UID (or the
	// attachment recorded no UID).
	PodExists PodState = "exists"
	// PodGone: no pod of that namespace and name exists.
	PodGone PodState = "gone"
	// PodReplaced: a pod of that name exists with another UID: the recorded pod was
	// deleted and a new one of the same name created.
	PodReplaced PodState = "replaced"
)

// LookupPod asks the API server (one GET, no cache) whether the pod ref names exists.
// It returns the UID found, if any. An API error (unreachable, forbidden) wraps
// ErrUnavailable.
func LookupPod(ctx context.Context, cs kubernetes.Interface, ref PodRef) (PodState, string, error) {
	p, err := cs.CoreV1().Pods(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return PodGone, "", nil
	case err != nil:
		return "", "", errors.Wrapf(ErrUnavailable, "get pod %s/%s: %v", ref.Namespace, ref.Name, err)
	}
	if ref.UID != "" && string(p.UID) != ref.UID {
		return PodReplaced, string(p.UID), nil
	}
	return PodExists, string(p.UID), nil
}
