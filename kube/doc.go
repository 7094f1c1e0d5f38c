// Package kube is Coil's Kubernetes integration, built on client-go informers (no
// polling of the API server):
//
//   - RESTConfig: a kubeconfig file, else the in-cluster configuration when running in
//     a pod, else Kubernetes features are off (ErrDisabled).
//   - PodCache and ResolvePool: coild's pool selection for a CNI ADD. The pod's
//     annotation coil.cybozu.com/pool wins, then its namespace's annotation, then the
//     CNI network config's "pool", then coild's --default-pool. The chosen pool is never
//     replaced by another one: a pool that does not exist is the caller's error to report.
//   - LeakCollector: finds attachments whose pod no longer exists (matched by pod UID
//     when recorded, so a StatefulSet pod recreated under the same name is a different
//     pod) and reports them as leaked only after a grace period AND a fresh read from the
//     API server (two observations: the informer cache, then a GET).
//   - NodeReclaimer: run by coil-controller under leader election (a coordination.k8s.io
//     Lease). When a Node is deleted it reclaims the node's blocks with
//     allocator.Admin.Reclaim, which is fenced on the node's liveness key: while the
//     node's coild still holds its etcd lease the reclaim is refused and retried later.
package kube
