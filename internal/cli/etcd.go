package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coil-net/coil/events"
)

// etcdCommand groups what concerns etcd itself (not Coil's data).
func (a *app) etcdCommand() *cobra.Command {
	var nodes []string
	var admin bool
	roles := &cobra.Command{
		Use:   "roles",
		Short: "Print the etcd roles and users Coil needs (etcdctl commands, or -o json|yaml)",
		Long: `Print the etcd RBAC roles for Coil under --etcd-prefix, derived from the key layout
(package events), so they cannot drift from what Coil writes:

  coil-admin       read and write the whole prefix (coilctl, coil-controller)
  coil-node-NODE   read the whole prefix; write only node NODE's own stream, its
                   liveness key and the pool streams (coild on NODE)

The table output is the etcdctl commands that create each role and its user (no
password: with --client-cert-auth etcd takes the user from the client certificate's
Common Name, so node NODE's certificate has CN coil-node-NODE). Run them as etcd's root
user, before 'etcdctl auth enable'. Nothing is read from or written to etcd.`,
		Example: `  coilctl etcd roles --admin --node worker-1 --node worker-2
  coilctl etcd roles --node worker-1 -o json`,
		Args: argsUsage(0, 0, "no arguments (nodes are given with --node)"),
		RunE: a.run(func(*cobra.Command, []string) error {
			if !admin && len(nodes) == 0 {
				return usagef("coilctl etcd roles: give --admin, --node NODE (repeatable), or both")
			}
			keys := events.NewKeys(a.opts.etcd.Prefix)
			var out []events.Role
			if admin {
				out = append(out, keys.AdminRole())
			}
			for _, n := range nodes {
				r, err := keys.NodeRole(n)
				if err != nil {
					return usagef("--node: %v", err)
				}
				out = append(out, r)
			}
			if a.opts.output != "table" {
				return a.printValue(out)
			}
			var b strings.Builder
			for i, r := range out {
				if i > 0 {
					b.WriteString("\n")
				}
				fmt.Fprintf(&b, "# %s\n", r.Name)
				for _, p := range r.Permissions {
					fmt.Fprintf(&b, "#   %s %s%s: %s\n", p.Type, p.Key, map[bool]string{true: "*"}[p.Prefix], p.Why)
				}
				for _, c := range r.EtcdctlCommands() {
					b.WriteString(c + "\n")
				}
			}
			_, err := a.env.Stdout.Write([]byte(b.String()))
			return err
		}),
	}
	roles.Flags().StringArrayVar(&nodes, "node", nil, "node name (repeatable): print the role coild on this node needs")
	roles.Flags().BoolVar(&admin, "admin", false, "print the role of coilctl and coil-controller")
	return a.group("etcd", "etcd access control for Coil", roles)
}
