package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"go.uber.org/goleak"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/cniproto/cniserver"
	"github.com/coil-net/coil/cniproto/cniserver/cniservertest"
	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/testutil"
)

// pluginDir holds bin/coil, built on first use (mode 0755 along the way, so an
// unprivileged user can run it). Fuzzing (which runs TestMain in every worker) never
// builds it.
var (
	pluginOnce  sync.Once
	pluginDirV  string
	pluginErr   error
	pluginClean func()
)

func binDirOf(t testing.TB) string {
	t.Helper()
	pluginOnce.Do(func() {
		dir, err := os.MkdirTemp("", "coil-bin-")
		if err != nil {
			pluginErr = err
			return
		}
		pluginClean = func() { _ = os.RemoveAll(dir) }
		if err := os.Chmod(dir, 0o755); err != nil {
			pluginErr = err
			return
		}
		if err := gobuild.Build(context.Background(), filepath.Join(dir, "coil"), "./cmd/coil", true); err != nil {
			pluginErr = fmt.Errorf("building the plugin: %w", err)
			return
		}
		pluginDirV = dir
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginDirV
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pluginClean != nil {
		pluginClean()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// fakeCoild is an in-test Handler (coild does not plumb anything here). It hands out
// one IPv4 and one IPv6 address per attachment, the same on a repeated Add.
type fakeCoild struct {
	mu       sync.Mutex
	adds     []cniproto.Request
	dels     []cniproto.Request
	checks   []cniproto.Request
	gcs      []cniproto.GCRequest
	delErr   error
	statusEr error
	next     int
	addrs    map[cniproto.Attachment][]netip.Addr
}

func (f *fakeCoild) Add(_ context.Context, r *cniproto.Request) (*cniproto.AddResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds = append(f.adds, *r)
	if f.addrs == nil {
		f.addrs = map[cniproto.Attachment][]netip.Addr{}
	}
	key := cniproto.Attachment{ContainerID: r.ContainerID, IfName: r.IfName}
	a, ok := f.addrs[key]
	if !ok {
		f.next++
		a = []netip.Addr{netip.AddrFrom4([4]byte{10, 1, 0, byte(f.next)}), netip.MustParseAddr(fmt.Sprintf("fd00::%d", f.next))}
		f.addrs[key] = a
	}
	mtu := r.MTU
	if mtu == 0 {
		mtu = 1500
	}
	return &cniproto.AddResult{
		HostVeth: "coil" + r.ContainerID[:6], HostMAC: "02:00:00:00:00:01", PodIfName: r.IfName, PodMAC: "02:00:00:00:00:02",
		Addrs: a, Gateway4: netip.MustParseAddr("169.254.1.1"), Gateway6: netip.MustParseAddr("fe80::1"), MTU: mtu,
	}, nil
}

func (f *fakeCoild) Del(_ context.Context, r *cniproto.Request) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dels = append(f.dels, *r)
	return f.delErr
}

func (f *fakeCoild) Check(_ context.Context, r *cniproto.Request) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks = append(f.checks, *r)
	want := f.addrs[cniproto.Attachment{ContainerID: r.ContainerID, IfName: r.IfName}]
	if want == nil {
		return cniproto.UnknownContainer(r.ContainerID, r.IfName)
	}
	if fmt.Sprint(want) != fmt.Sprint(r.PrevAddrs) {
		return cniproto.NewError(cniproto.CodeInternal, "addresses differ", fmt.Sprint(want, r.PrevAddrs))
	}
	return nil
}

func (f *fakeCoild) GC(_ context.Context, r *cniproto.GCRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gcs = append(f.gcs, *r)
	return nil
}

func (f *fakeCoild) Status(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statusEr
}

// sockDir makes a directory anyone may traverse (0755), removed at the end.
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "coil-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startCoild serves h on a fresh socket until the test ends.
func startCoild(t *testing.T, h cniproto.Handler) string {
	t.Helper()
	path := filepath.Join(sockDir(t), "coild.sock")
	cniservertest.Serve(t, h, path, cniservertest.StderrLogger(slog.LevelError), cniserver.Options{})
	return path
}

func netList(t *testing.T, cniVersion, plugin string) *libcni.NetworkConfigList {
	t.Helper()
	list, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"` + cniVersion + `","name":"coilnet","plugins":[` + plugin + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func coilPlugin(socket string) string {
	return `{"type":"coil","socket":"` + socket + `","pool":"blue","timeout":"10s"}`
}

func cni(t *testing.T) *libcni.CNIConfig {
	t.Helper()
	return libcni.NewCNIConfigWithCacheDir([]string{binDirOf(t)}, t.TempDir(), nil)
}

func podRT(id, netns string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: id, NetNS: netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web-" + id[:4]},
			{"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", "uid-" + id[:4]}},
	}
}

// cniCode returns the CNI error code of err (0 when it is not a CNI error).
func cniCode(t *testing.T, err error) (uint, string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("not a CNI error: %v", err)
	}
	return e.Code, e.Error()
}

func TestLibcniAddCheckDel(t *testing.T) {
	_, nsPath := testutil.NetNS(t, "cni")
	for i, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			h := &fakeCoild{}
			c, list := cni(t), netList(t, v, coilPlugin(startCoild(t, h)))
			id := fmt.Sprintf("%04dcafe", i)
			rt := podRT(id, nsPath)
			ctx := context.Background()

			res, err := c.AddNetworkList(ctx, list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Fatalf("result version %s, want %s", res.Version(), v)
			}
			var ips []string
			switch r := res.(type) {
			case *types100.Result:
				if len(r.Interfaces) != 2 || r.Interfaces[1].Sandbox != nsPath || r.Interfaces[1].Name != "eth0" || len(r.Routes) != 2 {
					t.Fatalf("result %s", r)
				}
				for _, ip := range r.IPs {
					ips = append(ips, ip.Address.String()+" via "+ip.Gateway.String())
				}
			case *types040.Result:
				if len(r.Interfaces) != 2 || r.Interfaces[1].Sandbox != nsPath || len(r.Routes) != 2 {
					t.Fatalf("result %s", r)
				}
				for _, ip := range r.IPs {
					ips = append(ips, ip.Address.String()+" via "+ip.Gateway.String())
				}
			default:
				t.Fatalf("result type %T", res)
			}
			if strings.Join(ips, ",") != "10.1.0.1/32 via 169.254.1.1,fd00::1/128 via fe80::1" {
				t.Fatalf("ips %v", ips)
			}

			if v != "0.3.1" { // CHECK exists from 0.4.0
				if err := c.CheckNetworkList(ctx, list, rt); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			if err := c.DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}

			h.mu.Lock()
			defer h.mu.Unlock()
			want := cniproto.Request{ContainerID: id, NetNS: nsPath, IfName: "eth0", Pool: "blue",
				PodNamespace: "default", PodName: "web-" + id[:4], PodUID: "uid-" + id[:4]}
			if len(h.adds) != 1 || fmt.Sprint(h.adds[0]) != fmt.Sprint(want) {
				t.Fatalf("coild saw ADD %+v, want %+v", h.adds, want)
			}
			if len(h.dels) != 1 || h.dels[0].ContainerID != id || h.dels[0].IfName != "eth0" || h.dels[0].PodName != want.PodName {
				t.Fatalf("coild saw DEL %+v", h.dels)
			}
			if v != "0.3.1" && (len(h.checks) != 1 || fmt.Sprint(h.checks[0].PrevAddrs) != "[10.1.0.1 fd00::1]") {
				t.Fatalf("coild saw CHECK %+v", h.checks)
			}
		})
	}
}

func TestLibcniDelUnknownContainer(t *testing.T) {
	h := &fakeCoild{delErr: cniproto.UnknownContainer("x", "eth0")}
	c, list := cni(t), netList(t, "1.1.0", coilPlugin(startCoild(t, h)))
	if err := c.DelNetworkList(context.Background(), list, podRT("deadbeef", "")); err != nil {
		t.Fatalf("DEL of an unknown container must succeed: %v", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.dels) != 1 {
		t.Fatalf("dels %+v", h.dels)
	}
}

func TestLibcniGC(t *testing.T) {
	_, nsPath := testutil.NetNS(t, "gc")
	h := &fakeCoild{}
	c, list := cni(t), netList(t, "1.1.0", coilPlugin(startCoild(t, h)))
	ctx := context.Background()

	// No list: the plugin does nothing.
	if err := c.GCNetworkList(ctx, list, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"aaaa0001", "bbbb0002"} {
		if _, err := c.AddNetworkList(ctx, list, podRT(id, nsPath)); err != nil {
			t.Fatal(err)
		}
	}
	valid := []types.GCAttachment{{ContainerID: "aaaa0001", IfName: "eth0"}}
	if err := c.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.gcs) != 1 || len(h.gcs[0].ValidAttachments) != 1 ||
		h.gcs[0].ValidAttachments[0] != (cniproto.Attachment{ContainerID: "aaaa0001", IfName: "eth0"}) {
		t.Fatalf("coild saw GC %+v", h.gcs)
	}
	// libcni itself DELs the cached attachment that is not valid.
	if len(h.dels) != 1 || h.dels[0].ContainerID != "bbbb0002" {
		t.Fatalf("dels %+v", h.dels)
	}
}

func TestLibcniStatus(t *testing.T) {
	ctx := context.Background()
	h := &fakeCoild{}
	sock := startCoild(t, h)
	c := cni(t)
	if err := c.GetStatusNetworkList(ctx, netList(t, "1.1.0", coilPlugin(sock))); err != nil {
		t.Fatalf("STATUS with coild ready: %v", err)
	}
	h.mu.Lock()
	h.statusEr = cniproto.NotReady("replaying the log")
	h.mu.Unlock()
	err := c.GetStatusNetworkList(ctx, netList(t, "1.1.0", coilPlugin(sock)))
	if code, msg := cniCode(t, err); code != types.ErrPluginNotAvailable || !strings.Contains(msg, "replaying the log") {
		t.Fatalf("STATUS not ready: %d %s", code, msg)
	}
	// Server down: nothing listens on the path.
	down := filepath.Join(t.TempDir(), "coild.sock")
	err = c.GetStatusNetworkList(ctx, netList(t, "1.1.0", coilPlugin(down)))
	if code, msg := cniCode(t, err); code != types.ErrPluginNotAvailable || !strings.Contains(msg, down) {
		t.Fatalf("STATUS with coild down: %d %s", code, msg)
	}
}

func TestLibcniCoildUnreachable(t *testing.T) {
	_, nsPath := testutil.NetNS(t, "down")
	ctx := context.Background()
	down := filepath.Join(t.TempDir(), "coild.sock")
	c, list := cni(t), netList(t, "1.1.0", coilPlugin(down))
	_, err := c.AddNetworkList(ctx, list, podRT("cafe0001", nsPath))
	if code, msg := cniCode(t, err); code != types.ErrTryAgainLater || !strings.Contains(msg, down) || !strings.Contains(msg, "does not exist") {
		t.Fatalf("ADD with no socket: %d %s", code, msg)
	}
	err = c.DelNetworkList(ctx, list, podRT("cafe0001", nsPath))
	if code, msg := cniCode(t, err); code != types.ErrTryAgainLater {
		t.Fatalf("DEL with no socket: %d %s", code, msg)
	}
}

// TestPluginRefusesBeforeCoild: what the plugin can tell is wrong never reaches coild:
// CNI_NETNS naming the namespace the plugin runs in (the node's), K8S_POD_* values
// breaking their rules. The DEL that follows such an ADD succeeds (issue 10).
func TestPluginRefusesBeforeCoild(t *testing.T) {
	f := &fakeCoild{}
	sock := startCoild(t, f)
	_, nsPath := testutil.NetNS(t, "args")
	ctx := context.Background()
	c, list := cni(t), netList(t, "1.1.0", coilPlugin(sock))
	for _, tc := range []struct {
		name string
		rt   *libcni.RuntimeConf
		msg  string
	}{
		{"own namespace", podRT("cafe0001", "/proc/self/ns/net"), `invalid CNI_NETNS "/proc/self/ns/net": it is the node's own network namespace`},
		{"bad pod namespace", func() *libcni.RuntimeConf {
			rt := podRT("cafe0002", nsPath)
			rt.Args = append(rt.Args, [2]string{"K8S_POD_NAMESPACE", "../kube-system"})
			return rt
		}(), `invalid CNI_ARGS K8S_POD_NAMESPACE "../kube-system"`},
		{"bad pod name", func() *libcni.RuntimeConf {
			rt := podRT("cafe0003", nsPath)
			rt.Args = append(rt.Args, [2]string{"K8S_POD_NAME", "web/0"})
			return rt
		}(), `invalid CNI_ARGS K8S_POD_NAME "web/0"`},
	} {
		_, err := c.AddNetworkList(ctx, list, tc.rt)
		if code, msg := cniCode(t, err); code != types.ErrInvalidEnvironmentVariables || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: got %d %q, want 4 with %q", tc.name, code, msg, tc.msg)
		}
		if err := c.DelNetworkList(ctx, list, tc.rt); err != nil {
			t.Errorf("%s: DEL after the refused ADD: %v", tc.name, err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.adds) != 0 || len(f.dels) != 3 {
		t.Errorf("coild saw %d adds (want none) and %d dels (want 3)", len(f.adds), len(f.dels))
	}
}

// TestPluginForwardsMTU: the netconf "mtu" goes to coild on ADD and CHECK, the result
// names the MTU on both interfaces; an invalid one is refused (code 7) before coild.
func TestPluginForwardsMTU(t *testing.T) {
	f := &fakeCoild{}
	sock := startCoild(t, f)
	_, nsPath := testutil.NetNS(t, "mtu")
	ctx := context.Background()
	c := cni(t)
	list := netList(t, "1.1.0", `{"type":"coil","socket":"`+sock+`","mtu":9000}`)
	rt := podRT("cafe0001", nsPath)
	res, err := c.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatal(err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Interfaces) != 2 || r.Interfaces[0].Mtu != 9000 || r.Interfaces[1].Mtu != 9000 {
		t.Errorf("result interfaces %v, want mtu 9000 on both", r.Interfaces)
	}
	if err := c.CheckNetworkList(ctx, list, rt); err != nil {
		t.Fatal(err)
	}
	// Without "mtu", coild chooses: the request carries 0.
	plain := netList(t, "1.1.0", coilPlugin(sock))
	if _, err := c.AddNetworkList(ctx, plain, podRT("cafe0002", nsPath)); err != nil {
		t.Fatal(err)
	}
	for _, mtu := range []string{"100", "65536", "1500.5", `"1500"`} {
		bad := netList(t, "1.1.0", `{"type":"coil","socket":"`+sock+`","mtu":`+mtu+`}`)
		_, err := c.AddNetworkList(ctx, bad, podRT("cafe0003", nsPath))
		if code, msg := cniCode(t, err); code != types.ErrInvalidNetworkConfig || !strings.Contains(msg, `"mtu"`) {
			t.Errorf("mtu %s: got %d %q, want 7 naming \"mtu\"", mtu, code, msg)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.adds) != 2 || f.adds[0].MTU != 9000 || f.adds[1].MTU != 0 || len(f.checks) != 1 || f.checks[0].MTU != 9000 {
		t.Errorf("coild saw adds %+v checks %+v; want MTU 9000 on the first ADD and the CHECK, 0 on the second ADD, nothing else", f.adds, f.checks)
	}
}

func TestLibcniBadConfig(t *testing.T) {
	c := cni(t)
	list := netList(t, "1.1.0", `{"type":"coil","timeout":"banana"}`)
	err := c.GetStatusNetworkList(context.Background(), list)
	if code, msg := cniCode(t, err); code != types.ErrInvalidNetworkConfig || !strings.Contains(msg, `invalid "timeout" "banana"`) {
		t.Fatalf("%d %s", code, msg)
	}
}

// runPlugin execs the plugin directly (for what libcni cannot send) and returns the
// CNI error it printed.
func runPlugin(t *testing.T, command, stdin string, cred *syscall.Credential) *types.Error {
	t.Helper()
	binDir := binDirOf(t)
	cmd := exec.Command(filepath.Join(binDir, "coil"))
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=cafe0001", "CNI_NETNS=/var/run/netns/none",
		"CNI_IFNAME=eth0", "CNI_PATH=" + binDir}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("plugin %s: want a non-zero exit, got %v (stdout %s stderr %s)", command, err, stdout.String(), stderr.String())
	}
	var e types.Error
	if jerr := json.Unmarshal(stdout.Bytes(), &e); jerr != nil {
		t.Fatalf("plugin %s printed no CNI error: %v: %q (stderr %s)", command, jerr, stdout.String(), stderr.String())
	}
	return &e
}

func TestMalformedStdin(t *testing.T) {
	for _, tc := range []struct {
		stdin string
		code  uint
		msg   string
	}{
		{`{"cniVersion":"1.1.0","name":`, types.ErrDecodingFailure, "unmarshal"},
		{`{"cniVersion":"1.1.0","name":"n","type":"coil","socket":"relative.sock"}`, types.ErrInvalidNetworkConfig, "must be an absolute path"},
		{`{"cniVersion":"1.1.0","name":"n","type":"bridge"}`, types.ErrInvalidNetworkConfig, `"type" is "bridge", want "coil"`},
		{`{"cniVersion":"1.1.0","type":"coil"}`, types.ErrInvalidNetworkConfig, "missing network name"},
		{`{"cniVersion":"1.1.0","name":"n","type":"coil","sokcet":"/run/x.sock"}`, types.ErrUnsupportedField, `"sokcet"`},
	} {
		e := runPlugin(t, "ADD", tc.stdin, nil)
		if e.Code != tc.code || !strings.Contains(e.Msg, tc.msg) {
			t.Errorf("stdin %s: got %d %q, want %d %q", tc.stdin, e.Code, e.Msg, tc.code, tc.msg)
		}
	}
}

func TestSocketPermissionDenied(t *testing.T) {
	testutil.RequireRoot(t)
	sock := startCoild(t, &fakeCoild{}) // mode 0600, owned by root
	const nobody = 65534
	conf := `{"cniVersion":"1.1.0","name":"n","type":"coil","socket":"` + sock + `"}`
	e := runPlugin(t, "ADD", conf, &syscall.Credential{Uid: nobody, Gid: nobody})
	if e.Code != types.ErrIOFailure || !strings.Contains(e.Error(), sock) || !strings.Contains(e.Error(), "permission denied") ||
		!strings.Contains(e.Error(), "uid 65534") {
		t.Fatalf("got %d %q", e.Code, e.Error())
	}
	e = runPlugin(t, "STATUS", conf, &syscall.Credential{Uid: nobody, Gid: nobody})
	if e.Code != types.ErrPluginNotAvailable || !strings.Contains(e.Error(), sock) {
		t.Fatalf("STATUS: got %d %q", e.Code, e.Error())
	}
}
