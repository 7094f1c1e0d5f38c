package kubelab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/lab"
)

// PlainCoil is Coil on a runtime-only node without Kubernetes: coild run directly in the
// node's namespaces (Kubernetes features off, its own embedded etcd on a unix socket in
// the node's directory) and the plugin and conflist installed in the node's CNI
// directories. CRI clients that create sandboxes of no Kubernetes pod (crictl runp,
// critest) use it: with the API on, coild refuses a pod the API server does not know
// (code 4, docs/kubernetes.md), by design.
type PlainCoil struct {
	Coild   *lab.Process
	EtcdURL string
	Socket  string
}

// StartPlainCoil installs bin/coil (and portmap, chained after it, if given) and a
// conflist into the node's CNI directories, starts
// coild (bin/coild, with --embedded-etcd) in the node's namespaces, waits for its socket
// and creates pool "default" (subnet) with coilctl.
func (n *Node) StartPlainCoil(ctx context.Context, subnet, portmap string) (*PlainCoil, error) {
	kit := n.c.Config.Kit
	pc := &PlainCoil{EtcdURL: "unix://" + filepath.Join(n.Dir, "etcd.sock"), Socket: "/run/coild.sock"}
	plugins := map[string]string{"coil": kit.Bin("coil")}
	if portmap != "" {
		plugins["portmap"] = portmap
	}
	for name, src := range plugins {
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, errors.Wrap(err, "kubelab: plugin")
		}
		if err := os.WriteFile(filepath.Join(n.Dir, "cni-bin", name), b, 0o755); err != nil {
			return nil, errors.Wrap(err, "kubelab: plugin")
		}
	}
	chain := ""
	if portmap != "" {
		chain = `, {"type": "portmap", "capabilities": {"portMappings": true}}`
	}
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "coil-plain",
  "plugins": [{"type": "coil", "socket": %q, "timeout": "30s"}%s]}`, pc.Socket, chain)
	if err := os.WriteFile(filepath.Join(n.Dir, "cni-conf", "10-coil.conflist"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, err := n.StartCommand(ctx, "coild", n.enter(kit.Bin("coild"), "--node", n.Name,
		"--etcd-endpoints", pc.EtcdURL, "--embedded-etcd", filepath.Join(n.Dir, "coild-etcd"),
		"--socket", pc.Socket, "--state-dir", "/run/coild", "--metrics-addr", ""))
	if err != nil {
		return nil, err
	}
	pc.Coild = p
	if err := waitFor(ctx, 60*time.Second, p, "coild of "+n.Name, func() (bool, string) {
		_, err := run(ctx, nil, kit.Bin("coilctl"), "--etcd-endpoints", pc.EtcdURL, "node", "list")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	}); err != nil {
		return nil, err
	}
	if _, err := run(ctx, nil, kit.Bin("coilctl"), "--etcd-endpoints", pc.EtcdURL, "pool", "create", "default", subnet, "--block-size-bits", "5"); err != nil {
		return nil, err
	}
	return pc, nil
}
