package events

import (
	"context"
	"fmt"
	"strings"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcd RBAC for Coil (docs/operations.md, "etcd TLS and RBAC"). Only this package knows
// the key layout, so the roles are derived from it here and nowhere else: coilctl prints
// them (`coilctl etcd roles`), tests apply them to a real etcd with ApplyRole.
//
// Two kinds of role:
//   - coil-admin: read and write the whole prefix (coilctl, coil-controller);
//   - coil-node-NODE: read the whole prefix (a node replays every pool, watches the
//     cluster), write only its own stream (node/NODE: events, head, snapshot pointer,
//     attachment index), its liveness key, and the streams every node appends to
//     (SharedStreamKinds: pool/, block claims). So a node's credentials cannot forge
//     another node's assignments or liveness.
//
// A new stream kind written by every node is added to SharedStreamKinds; a kind owned by
// one node, to nodeOwnedStreams. Nothing else changes.

// SharedStreamKinds are the stream kinds every node appends to (block ownership). A
// node's role may write every stream of these kinds.
var SharedStreamKinds = []string{"pool", "block"}

// nodeOwnedStreams are the streams that belong to one node (written only by it).
func nodeOwnedStreams(node string) []Stream { return []Stream{NodeStream(node)} }

// Permission is one etcd grant: Key alone, or with Prefix every key starting with Key.
type Permission struct {
	// Type is "read", "write" or "readwrite" (etcdctl's words).
	Type   string `json:"type"`
	Key    string `json:"key"`
	Prefix bool   `json:"prefix"`
	// Why says what the grant is for.
	Why string `json:"why"`
}

// Role is an etcd role for Coil and the user that holds it. With client-certificate
// authentication etcd takes the user name from the certificate's Common Name, so a
// node's certificate has CN User.
type Role struct {
	Name        string       `json:"role"`
	User        string       `json:"user"`
	Permissions []Permission `json:"permissions"`
}

// AdminRole is the role of coilctl and coil-controller: the whole prefix.
func (k Keys) AdminRole() Role {
	return Role{Name: "coil-admin", User: "coil-admin", Permissions: []Permission{
		{Type: "readwrite", Key: k.prefix, Prefix: true, Why: "all of Coil's data (pool definitions, reclaim, import, index)"},
	}}
}

// NodeRole is the role of coild on node: read everything under the prefix, write its own
// stream, its liveness key and the shared streams. node must be a valid node name.
func (k Keys) NodeRole(node string) (Role, error) {
	if err := ValidName(node); err != nil {
		return Role{}, errors.Wrap(err, "node")
	}
	r := Role{Name: "coil-node-" + node, User: "coil-node-" + node}
	add := func(typ, key string, prefix bool, why string) {
		r.Permissions = append(r.Permissions, Permission{Type: typ, Key: key, Prefix: prefix, Why: why})
	}
	add("read", k.prefix, true, "replay and watch every stream, read heads and liveness keys")
	for _, s := range nodeOwnedStreams(node) {
		add("readwrite", k.StreamPrefix(s), true, "events of its own stream "+string(s))
		add("readwrite", k.Head(s), false, "head of "+string(s))
		add("readwrite", k.Snap(s), false, "snapshot pointer of "+string(s))
		add("readwrite", k.IndexStreamPrefix(s), true, "attachment index of "+string(s))
	}
	add("readwrite", k.Alive(node), false, "its liveness key (attached to its lease)")
	for _, kind := range SharedStreamKinds {
		add("readwrite", k.LogPrefix()+kind+"/", true, "events of every "+kind+"/ stream (appended by every node)")
		add("readwrite", k.HeadPrefix()+kind+"/", true, "heads of every "+kind+"/ stream")
		add("readwrite", k.prefix+"snap/"+kind+"/", true, "snapshot pointers of every "+kind+"/ stream")
	}
	return r, nil
}

// EtcdctlCommands are the etcdctl commands that create r and its user (without a
// password: the user authenticates with its client certificate, CN = r.User).
func (r Role) EtcdctlCommands() []string {
	out := []string{"etcdctl role add " + r.Name}
	for _, p := range r.Permissions {
		c := fmt.Sprintf("etcdctl role grant-permission %s %s %s", r.Name, p.Type, shellQuote(p.Key))
		if p.Prefix {
			c += " --prefix"
		}
		out = append(out, c)
	}
	return append(out,
		"etcdctl user add "+r.User+" --no-password",
		"etcdctl user grant-role "+r.User+" "+r.Name)
}

func shellQuote(s string) string {
	if strings.IndexFunc(s, func(c rune) bool {
		safe := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/._-", c)
		return !safe
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ApplyRole creates r and its user (no password) through cli, which needs etcd's root
// role; both may exist already (the grants are added again, which etcd allows).
func ApplyRole(ctx context.Context, cli *clientv3.Client, r Role) error {
	if _, err := cli.RoleAdd(ctx, r.Name); err != nil && !strings.Contains(err.Error(), "role name already exists") {
		return errors.Wrapf(err, "role add %s", r.Name)
	}
	for _, p := range r.Permissions {
		end := ""
		if p.Prefix {
			end = clientv3.GetPrefixRangeEnd(p.Key)
		}
		typ, ok := map[string]clientv3.PermissionType{
			"read": clientv3.PermissionType(clientv3.PermRead), "write": clientv3.PermissionType(clientv3.PermWrite),
			"readwrite": clientv3.PermissionType(clientv3.PermReadWrite),
		}[p.Type]
		if !ok {
			return errors.Newf("role %s: permission type %q", r.Name, p.Type)
		}
		if _, err := cli.RoleGrantPermission(ctx, r.Name, p.Key, end, typ); err != nil {
			return errors.Wrapf(err, "role %s: grant %s %s", r.Name, p.Type, p.Key)
		}
	}
	if _, err := cli.UserAddWithOptions(ctx, r.User, "", &clientv3.UserAddOptions{NoPassword: true}); err != nil &&
		!strings.Contains(err.Error(), "user name already exists") {
		return errors.Wrapf(err, "user add %s", r.User)
	}
	if _, err := cli.UserGrantRole(ctx, r.User, r.Name); err != nil {
		return errors.Wrapf(err, "user %s: grant role %s", r.User, r.Name)
	}
	return nil
}
