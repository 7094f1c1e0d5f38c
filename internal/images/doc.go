// Package images builds Coil's container images from scratch, offline and reproducibly:
// no base image, one layer made from files on disk (static binaries), and an OCI image
// archive (an OCI image layout in a tar file) that `ctr images import`, `ctr -n k8s.io
// images import`, `skopeo copy oci-archive:` and `podman load` read.
//
// Reproducible: the same files and Spec give the same image digest and the same archive
// bytes. Every tar entry (in the layer and in the archive) has the Spec's Created time,
// uid and gid 0, no user or group names, and entries come in path order; gzip writes no
// name or time; the image config's and the history's times are Created too. The image
// model, manifests and digests are go-containerregistry's (pkg/v1), not hand-written.
//
// catalog.go says what goes into each of Coil's images (coil, coil-pause, coil-testapp);
// cmd/coil-images builds the binaries and writes the archives (`make images`).
package images
