package runtimes

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/coil-net/coil/internal/images"
	"github.com/coil-net/coil/internal/installcni"
	"github.com/coil-net/coil/internal/testutil"
)

// inNode runs f with the calling thread in the node's network namespace, as a runtime
// runs its plugins: portmap and bandwidth act on the namespace they run in.
func (n *node) inNode(f func() error) error {
	nodeNS, err := ns.GetNS(n.path)
	if err != nil {
		return err
	}
	defer func() { _ = nodeNS.Close() }()
	return nodeNS.Do(func(ns.NetNS) error { return f() })
}

// exec runs a command in the node's network namespace.
func (n *node) exec(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.ns, name}, args...)...).CombinedOutput()
	return string(out), err
}

// serveInPod starts coil-testapp serve on port in the pod namespace until the test ends.
func serveInPod(t *testing.T, podNS string, port int) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", podNS, filepath.Join(pluginsDir, images.TestApp), "serve", "-listen", fmt.Sprintf(":%d", port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// probe runs coil-testapp probe in the node namespace and returns its JSON result.
func (n *node) probe(t *testing.T, target string) (map[string]any, error) {
	t.Helper()
	out, err := n.exec(filepath.Join(pluginsDir, images.TestApp), "probe", "-o", "json", "-timeout", "2s", "-retry-for", "20s", target)
	var r map[string]any
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		return nil, fmt.Errorf("probe %s: %w (output %q)", target, jerr, out)
	}
	if err != nil {
		return r, fmt.Errorf("probe %s: %w: %s", target, err, out)
	}
	return r, nil
}

// The installed conflist through libcni 1.3 (as containerd 2 and CRI-O read it): it
// selects 1.1.0 from "cniVersions"; coil answers 1.1.0; portmap maps a hostPort to the
// pod (the runtime config's portMappings, reached at the node's address and at
// 127.0.0.1, as critest does) and bandwidth shapes the pod's ingress (tbf on the host veth); CHECK and STATUS
// pass along the chain; DEL removes the DNAT rules and releases the address.
func TestInstalledConflistLibcni(t *testing.T) {
	testutil.RequireCommand(t, "iptables")
	testutil.RequireCommand(t, "tc")
	n := newNode(t)
	ctx := context.Background()
	b, err := os.ReadFile(filepath.Join(n.confDir, installcni.DefaultConflistName))
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.1.0" || len(list.Plugins) != 3 {
		t.Fatalf("libcni 1.3 read cniVersion %s with %d plugins, want 1.1.0 (from cniVersions) and 3", list.CNIVersion, len(list.Plugins))
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{n.binDir}, t.TempDir(), nil)
	podNS, podPath := testutil.NetNS(t, "pod")
	serveInPod(t, podNS, 8080)
	const id = "libcni-chain-1"
	rt := &libcni.RuntimeConf{
		ContainerID: id, NetNS: podPath, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web"}},
		CapabilityArgs: map[string]any{
			"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}},
			"bandwidth":    map[string]any{"ingressRate": 10_000_000, "ingressBurst": 1_000_000},
		},
	}
	var res types.Result
	if err = n.inNode(func() (err error) { res, err = cni.AddNetworkList(ctx, list, rt); return err }); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if res.Version() != "1.1.0" {
		t.Errorf("result version %s, want 1.1.0", res.Version())
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.IPs) != 1 || len(r.Interfaces) != 2 || r.Interfaces[0].Sandbox != "" {
		t.Fatalf("result %s", r)
	}
	podIP, hostVeth := r.IPs[0].Address.IP.String(), r.Interfaces[0].Name
	_, pool, _ := net.ParseCIDR(poolCIDR)
	if !pool.Contains(r.IPs[0].Address.IP) {
		t.Errorf("pod address %s not in the pool %s", podIP, poolCIDR)
	}
	if held := n.holding(id); len(held) != 1 || held[0].String() != podIP {
		t.Errorf("the log holds %v for %s, want %s", held, id, podIP)
	}

	// The pod answers on its address and through the host port.
	for _, target := range []string{"http://" + podIP + ":8080/", "http://127.0.0.1:18080/", "http://" + nodeIP + ":18080/"} {
		reply, err := n.probe(t, target)
		if err != nil {
			t.Errorf("%v", err)
			for _, c := range [][]string{{"iptables-save", "-t", "nat"}, {"sysctl", "net.ipv4.conf." + hostVeth + ".route_localnet"}, {"ip", "route"}, {"ip", "addr"}} {
				out, _ := n.exec(c[0], c[1:]...)
				t.Logf("%v:\n%s", c, out)
			}
			continue
		}
		if addrs := fmt.Sprint(reply["addrs"]); addrs != "["+podIP+"]" {
			t.Errorf("%s answered from %s, want the pod %s", target, addrs, podIP)
		}
	}
	if out, err := n.exec("tc", "qdisc", "show", "dev", hostVeth); err != nil || !strings.Contains(out, "tbf") || !strings.Contains(out, "rate 10Mbit") {
		t.Errorf("qdisc on %s: %v\n%s\nwant bandwidth's tbf at 10Mbit", hostVeth, err, out)
	}
	if out, err := n.exec("iptables-save", "-t", "nat"); err != nil || !strings.Contains(out, "--dport 18080") {
		t.Errorf("no DNAT rule for the host port: %v\n%s", err, out)
	}

	if err := n.inNode(func() error { return cni.CheckNetworkList(ctx, list, rt) }); err != nil {
		t.Errorf("CHECK along the chain: %v", err)
	}
	if err := n.inNode(func() error { return cni.GetStatusNetworkList(ctx, list) }); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if err := n.inNode(func() error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return n.holding(id) == nil }, "address of %s released", id)
	if out, err := n.exec("iptables-save", "-t", "nat"); err != nil || strings.Contains(out, "--dport 18080") {
		t.Errorf("DNAT rule for the host port left after DEL: %v\n%s", err, out)
	}
}

// What libcni 1.1 (containerd 1.6 and 1.7) does with the installed conflist: it reads
// only "cniVersion". Each version the chain may be called with (coil's skel
// negotiates 0.4.0 to 1.1.0) gets a result in that version, and CHECK and DEL work.
func TestChainVersions(t *testing.T) {
	testutil.RequireCommand(t, "iptables")
	n := newNode(t)
	ctx := context.Background()
	cni := libcni.NewCNIConfigWithCacheDir([]string{n.binDir}, t.TempDir(), nil)
	var raw map[string]any
	if err := json.Unmarshal([]byte(installcni.DefaultConflist), &raw); err != nil {
		t.Fatal(err)
	}
	delete(raw, "cniVersions")
	raw["plugins"].([]any)[0].(map[string]any)["socket"] = n.sock
	for i, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		raw["cniVersion"] = v
		b, _ := json.Marshal(raw)
		list, err := libcni.NetworkConfFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		_, podPath := testutil.NetNS(t, "v")
		rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("version-%d", i), NetNS: podPath, IfName: "eth0",
			CapabilityArgs: map[string]any{"portMappings": []map[string]any{{"hostPort": 19000 + i, "containerPort": 80, "protocol": "tcp"}}}}
		var res types.Result
		if err := n.inNode(func() (err error) { res, err = cni.AddNetworkList(ctx, list, rt); return err }); err != nil {
			t.Fatalf("ADD with cniVersion %s: %v", v, err)
		}
		if res.Version() != v {
			t.Errorf("cniVersion %s: result version %s", v, res.Version())
		}
		if err := n.inNode(func() error { return cni.CheckNetworkList(ctx, list, rt) }); err != nil {
			t.Errorf("CHECK with cniVersion %s: %v", v, err)
		}
		if err := n.inNode(func() error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
			t.Errorf("DEL with cniVersion %s: %v", v, err)
		}
	}
}
