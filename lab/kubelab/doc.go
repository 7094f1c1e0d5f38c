// Package kubelab runs a real Kubernetes cluster on a lab (package lab): a control plane
// (etcd, kube-apiserver with Node,RBAC authorization, kube-controller-manager,
// kube-scheduler) in lab node n0, and kubelet nodes n1, n2... each running containerd v2
// and a kubelet v1.37 in the node's network namespace and in a private mount namespace of
// its own, with its processes in a cgroup of its own (cgroup v1, cgroupfs driver). BIRD
// runs on every node as in the lab, n0 included, so the control plane reaches every pod.
// Coil is then installed as users install it (InstallCoil): its images imported into each
// node's containerd and `kubectl apply -k` of a lab overlay of deploy/.
//
// The binaries come from `make kube-bins` (kube-apiserver, kubectl, kubelet,
// kube-scheduler, kube-controller-manager), `make node-kit` (containerd, its shim, ctr,
// runc, crictl, critest), `make build` (Coil) and BuildEtcd. The caller reaches the API
// server and etcd, which live only in n0's namespace, through forwarders on loopback
// ports (lab.Forwarder). Nothing is added to the root network namespace.
//
// Close stops the kubelets, kills every process left in the nodes' cgroups (pods, shims,
// containerd), removes the cgroups and then the lab; a crashed run's leftovers (cgroups,
// namespaces, processes, work directory) are removed by lab.Sweep. Needs root, cgroup v1,
// nsenter, unshare, mount, ip and bird.
package kubelab
