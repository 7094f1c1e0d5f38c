package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/coil-net/coil/events"
)

// TestEtcdRoles: `coilctl etcd roles` prints the roles of events.Keys (the ones
// allocator.TestPerNodeCredentials applies to a real etcd) as etcdctl commands or JSON,
// under --etcd-prefix; without a role to print, or with an invalid node name, exit 2.
func TestEtcdRoles(t *testing.T) {
	r := runArgs(t, "--etcd-prefix", "/c2", "etcd", "roles", "--admin", "--node", "n1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"etcdctl role add coil-admin\n",
		"etcdctl role grant-permission coil-admin readwrite /c2/ --prefix\n",
		"etcdctl role grant-permission coil-node-n1 read /c2/ --prefix\n",
		"etcdctl role grant-permission coil-node-n1 readwrite /c2/log/node/n1/ --prefix\n",
		"etcdctl role grant-permission coil-node-n1 readwrite /c2/head/node/n1\n",
		"etcdctl role grant-permission coil-node-n1 readwrite /c2/alive/n1\n",
		"etcdctl role grant-permission coil-node-n1 readwrite /c2/log/pool/ --prefix\n",
		"etcdctl user add coil-node-n1 --no-password\n",
		"etcdctl user grant-role coil-node-n1 coil-node-n1\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runArgs(t, "etcd", "roles", "--node", "n1", "-o", "json")
	var got []events.Role
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
		t.Fatalf("-o json: exit %d, %v: %s", r.code, err, r.stdout)
	}
	want, _ := events.NewKeys("").NodeRole("n1")
	if len(got) != 1 || got[0].Name != want.Name || len(got[0].Permissions) != len(want.Permissions) {
		t.Fatalf("-o json: %+v, want %+v", got, want)
	}
	checkFail(t, runArgs(t, "etcd", "roles"), 2, nil, "give --admin, --node NODE (repeatable), or both")
	checkFail(t, runArgs(t, "etcd", "roles", "--node", "N_1"), 2, nil, `--node: node: name "N_1" is invalid`)
	checkFail(t, runArgs(t, "etcd"), 2, nil, `"coilctl etcd" needs a subcommand (one of: roles)`)
}
