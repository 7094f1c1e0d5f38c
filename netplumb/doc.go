// Package netplumb is Coil's only user of netlink. It plumbs pods (a veth pair per pod
// interface, addresses, the pod's default routes, the node's /32 and /128 routes to the
// pod) and offers the route-table primitives the exporter needs.
//
// # Namespaces
//
// A Plumber works on one "host" network namespace: the node's, given by path in
// Config.HostNetNS, or the namespace of the calling process when empty. Every host-side
// operation goes through a netlink handle opened inside that namespace at New, so no OS
// thread ever has to switch namespaces for host work. Pod namespaces are given by path
// (/var/run/netns/NAME or /proc/PID/ns/net); a pod's side is configured through a netlink
// handle opened inside the pod namespace. The veth pair is created inside the host
// namespace with the peer born directly in the pod namespace, so the root namespace (when
// it is not the host namespace) is never touched.
//
// # Layout per pod
//
//	pod ns:  IfName  addr/32, addr/128 (nodad)
//	         169.254.1.1 dev IfName scope link
//	         default via 169.254.1.1 dev IfName
//	         default via fe80::1 dev IfName
//	host ns: coilXXXXXXXXXXX (link group Config.LinkGroup) up, 169.254.1.1/32 scope link, fe80::1/64 (nodad)
//	         addr/32 dev coilXXXXXXXXXXX scope link proto Config.RouteProtocol   (main table)
//	         addr/128 dev coilXXXXXXXXXXX proto Config.RouteProtocol            (main table)
//
// Forwarding (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding) is switched on in the
// host namespace by New.
//
// # Ownership
//
// Coil's host veths carry the link group Config.LinkGroup; TeardownMany briefly moves the
// links it deletes to the group LinkGroup+1 (the "doomed" group) and deletes that group
// in one kernel call. Prepare creates a pair in the group LinkGroup+2 (the "pending"
// group) and Finish moves it to LinkGroup once configured, so a pair whose Setup was
// interrupted (a crash between the two) is recognisable. List reports links of all three
// groups; Teardown and TeardownMany delete nothing else. Routes Coil owns carry the route
// protocol Config.RouteProtocol; nothing with another protocol is modified or deleted. A
// pod namespace that is one of the node's own (the host namespace under any path, the
// process's, PID 1's: compared by nsfs device and inode) is refused with ErrNodeNetNS
// before anything is created, so a pod's side of a pair, with the default route Setup
// puts there, is never a node interface (CheckPodNetNS).
// Calls for different pods may run concurrently; the caller serialises calls for the
// same pod (same container ID and interface). One Plumber per host namespace: two Plumbers sharing a namespace and LinkGroup must
// not run TeardownMany concurrently.
//
// # Errors and contexts
//
// Errors wrap the sentinel errors of this package (ErrNetNSNotFound, ErrLinkNotFound, ...)
// so callers test them with errors.Is. Netlink calls cannot be interrupted; a context is
// checked between steps, so cancelling it stops an operation at the next step boundary.
// Netlink dumps that the kernel marks as interrupted (NLM_F_DUMP_INTR) are retried.
package netplumb
