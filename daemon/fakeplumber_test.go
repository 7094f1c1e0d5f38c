package daemon_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/daemon"
	"github.com/coil-net/coil/netplumb"
)

// fakePlumber is a daemon.Plumber in memory, for tests of coild's own logic without
// root (the real plumbing keeps its root tests in netplumb and the root daemon tests).
// It keeps host veths and the export table's routes, records every call in order
// ("op arg": checkns PATH, prepare VETH, finish VETH, abort VETH, check VETH,
// teardown VETH (one per veth of a batch), list, route-add PREFIX, route-del PREFIX),
// fails a call whose "op arg" or "op" has an error set, and holds a call whose
// "op arg" has a channel until it is closed.
type fakePlumber struct {
	mu     sync.Mutex
	links  map[string]*netplumb.HostLink
	routes map[netip.Prefix]bool // the export table's blackhole routes of Coil's protocol
	calls  []string
	fail   map[string]error
	hold   map[string]chan struct{}
	// entered receives "op arg" when a held call starts waiting.
	entered chan string
	// nodeNS: paths CheckPodNetNS refuses as the node's own; goneNS: paths that are
	// no namespace.
	nodeNS, goneNS map[string]bool
	// onTeardown runs at the start of TeardownMany, with the names (before any is
	// deleted).
	onTeardown func(names []string)
}

var _ daemon.Plumber = (*fakePlumber)(nil)

func newFakePlumber() *fakePlumber {
	return &fakePlumber{
		links: map[string]*netplumb.HostLink{}, routes: map[netip.Prefix]bool{},
		fail: map[string]error{}, hold: map[string]chan struct{}{}, entered: make(chan string, 64),
		nodeNS: map[string]bool{}, goneNS: map[string]bool{},
	}
}

// call records "op arg", waits while it is held, and returns its injected error.
func (f *fakePlumber) call(op, arg string) error {
	key := op + " " + arg
	f.mu.Lock()
	f.calls = append(f.calls, key)
	hold := f.hold[key]
	f.mu.Unlock()
	if hold != nil {
		f.entered <- key
		<-hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[key]; err != nil {
		return err
	}
	return f.fail[op]
}

// setFail makes calls of key ("op arg" or "op") fail with err; nil clears it.
func (f *fakePlumber) setFail(key string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, key)
		return
	}
	f.fail[key] = err
}

// holdCall makes the next calls of "op arg" wait until the returned func is called.
func (f *fakePlumber) holdCall(key string) (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.hold[key] = ch
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.hold, key)
			f.mu.Unlock()
			close(ch)
		})
	}
}

// callsOf returns the recorded calls that start with prefix, in order.
func (f *fakePlumber) callsOf(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// index returns the position of the first recorded call equal to key after position
// from, or -1.
func (f *fakePlumber) index(key string, from int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := from + 1; i < len(f.calls); i++ {
		if f.calls[i] == key {
			return i
		}
	}
	return -1
}

// setOnTeardown sets the onTeardown hook.
func (f *fakePlumber) setOnTeardown(hook func(names []string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onTeardown = hook
}

func (f *fakePlumber) hasLink(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.links[name] != nil
}

// putLink adds a host veth (pending: prepared, never finished) behind coild's back.
func (f *fakePlumber) putLink(name string, pending bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[name] = &netplumb.HostLink{Name: name, Pending: pending, Up: true, PeerNetNSID: -1}
}

// dropLink deletes a host veth behind coild's back (the pod's namespace went away).
func (f *fakePlumber) dropLink(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.links, name)
}

func (f *fakePlumber) hasRoute(p netip.Prefix) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routes[p]
}

func (f *fakePlumber) HostNetNSID() string { return "fake" }

// HostRoutes: the fake keeps no pod routes of its own.
func (f *fakePlumber) HostRoutes(context.Context) ([]netplumb.HostRoute, error) { return nil, nil }

// UplinkMTU: the fake node has no default route (pods get 1500).
func (f *fakePlumber) UplinkMTU() (netplumb.Uplink, error) {
	return netplumb.Uplink{}, netplumb.ErrNoDefaultRoute
}

func (f *fakePlumber) CheckPodNetNS(path string) error {
	if err := f.call("checkns", path); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.nodeNS[path]:
		return errors.Wrapf(netplumb.ErrNodeNetNS, "%s is the node's namespace", path)
	case f.goneNS[path]:
		return errors.Wrapf(netplumb.ErrNetNSNotFound, "%s", path)
	}
	return nil
}

func (f *fakePlumber) Prepare(_ context.Context, pod netplumb.Pod) (daemon.Pending, error) {
	veth := netplumb.HostVethName(pod.ContainerID, pod.IfName)
	if err := f.call("prepare", veth); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.links[veth] == nil { // a repeated ADD finds its pair
		f.links[veth] = &netplumb.HostLink{Name: veth, Pending: true, Up: true, PeerNetNSID: -1}
	}
	return &fakePending{f: f, veth: veth, ifName: pod.IfName}, nil
}

func (f *fakePlumber) Check(_ context.Context, pod netplumb.Pod) error {
	veth := netplumb.HostVethName(pod.ContainerID, pod.IfName)
	if err := f.call("check", veth); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.links[veth] == nil {
		return errors.Wrapf(netplumb.ErrLinkNotFound, "host veth %s", veth)
	}
	return nil
}

func (f *fakePlumber) TeardownMany(_ context.Context, hostVeths []string) error {
	f.mu.Lock()
	hook := f.onTeardown
	f.mu.Unlock()
	if hook != nil {
		hook(hostVeths)
	}
	var errs []error
	for _, v := range hostVeths {
		errs = append(errs, f.call("teardown", v))
	}
	if err := errors.Join(errs...); err != nil {
		return err // a batch deletes all or nothing
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range hostVeths {
		delete(f.links, v)
	}
	return nil
}

func (f *fakePlumber) List(context.Context) ([]netplumb.HostLink, error) {
	if err := f.call("list", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netplumb.HostLink
	for _, l := range f.links {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b netplumb.HostLink) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (f *fakePlumber) ListRoutes(_ context.Context, _, _ int) ([]netip.Prefix, error) {
	if err := f.call("route-list", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Prefix
	for p := range f.routes {
		out = append(out, p)
	}
	return out, nil
}

func (f *fakePlumber) AddBlackhole(_ context.Context, _, _ int, dst netip.Prefix) error {
	if err := f.call("route-add", dst.String()); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[dst] = true
	return nil
}

func (f *fakePlumber) DelRoute(_ context.Context, _, _ int, dst netip.Prefix) error {
	if err := f.call("route-del", dst.String()); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.routes, dst)
	return nil
}

// fakePending is a prepared pair of the fakePlumber.
type fakePending struct {
	f            *fakePlumber
	veth, ifName string
}

var fakeMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}

func (p *fakePending) Finish(_ context.Context, addrs []netip.Addr) (netplumb.Attachment, error) {
	if err := p.f.call("finish", p.veth); err != nil {
		return netplumb.Attachment{}, err
	}
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	l := p.f.links[p.veth]
	if l == nil {
		return netplumb.Attachment{}, errors.Wrapf(netplumb.ErrLinkNotFound, "host veth %s", p.veth)
	}
	l.Pending = false
	att := netplumb.Attachment{HostVeth: p.veth, IfName: p.ifName, HostMAC: fakeMAC, PodMAC: fakeMAC, Addrs: addrs}
	for _, a := range addrs {
		l.Routes = append(l.Routes, netip.PrefixFrom(a, a.BitLen()))
		if a.Is4() {
			att.Gateway4 = netplumb.DefaultGateway4
		} else {
			att.Gateway6 = netplumb.DefaultGateway6
		}
	}
	return att, nil
}

func (p *fakePending) Abort() error {
	if err := p.f.call("abort", p.veth); err != nil {
		return err
	}
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	delete(p.f.links, p.veth)
	return nil
}
