// Command coil-controller is Coil's cluster-wide controller. Run it as a Deployment
// (deploy/controller.yaml); replicas elect a leader on a Lease and only the leader
// reclaims deleted nodes' blocks. Flags are listed in docs/kubernetes.md.
package main
