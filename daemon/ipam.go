package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/ipamcheck"
	"github.com/coil-net/coil/netplumb"
)

// ipamReport gathers the node's kernel state (veths, pod routes, export table) and its
// projection (attachments, blocks) and compares them (ipamcheck.CompareKernel). It changes
// nothing. Attachments and veths with an ADD or DEL in progress are left out: they are
// between the two states by design.
func (d *Daemon) ipamReport(ctx context.Context) (*ipamcheck.NodeReport, error) {
	links, err := d.plumber.List(ctx)
	if err != nil {
		return nil, err
	}
	routes, err := d.plumber.HostRoutes(ctx)
	if err != nil {
		return nil, err
	}
	export, err := d.exp.List(ctx)
	if err != nil {
		return nil, err
	}
	atts := d.node.Attachments()
	blocks := d.node.BlockPrefixes()
	r := &ipamcheck.NodeReport{
		Node: d.cfg.Node, Seq: d.node.Head(events.NodeStream(d.cfg.Node)).Seq,
		Attachments: []ipamcheck.Attachment{}, Blocks: blocks, Veths: []ipamcheck.Veth{}, Routes: []ipamcheck.Route{},
		ExportTable: d.exp.Config().Table, ExportRoutes: export,
	}
	if r.Blocks == nil {
		r.Blocks = []netip.Prefix{}
	}
	if r.ExportRoutes == nil {
		r.ExportRoutes = []netip.Prefix{}
	}
	d.mu.Lock()
	busy := func(veth string) bool { return d.inflight[veth] > 0 || d.deleting[veth] != nil }
	for _, a := range atts {
		veth := netplumb.HostVethName(a.ContainerID, a.IfName)
		if busy(veth) {
			continue
		}
		pod := ""
		if a.PodName != "" {
			pod = a.PodNamespace + "/" + a.PodName
		}
		r.Attachments = append(r.Attachments, ipamcheck.Attachment{ContainerID: a.ContainerID, IfName: a.IfName, Veth: veth, Addrs: a.Addrs, Pod: pod})
	}
	skip := map[string]bool{}
	for _, l := range links {
		if busy(l.Name) {
			skip[l.Name] = true
			continue
		}
		r.Veths = append(r.Veths, ipamcheck.Veth{Name: l.Name, Pending: l.Pending})
	}
	d.mu.Unlock()
	for _, rt := range routes {
		if !skip[rt.Link] {
			r.Routes = append(r.Routes, ipamcheck.Route{Dst: rt.Dst, Link: rt.Link})
		}
	}
	ipamcheck.CompareKernel(r)
	if r.Findings == nil {
		r.Findings = []ipamcheck.Finding{}
	}
	return r, nil
}

// serveIPAM answers GET /ipam on the metrics port with the node's ipamcheck.NodeReport
// as JSON (503 while coild is not ready: its projection is being loaded).
func (d *Daemon) serveIPAM(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	if !d.ready.Load() {
		http.Error(w, "coild is not ready (replaying the log or re-acquiring its lease)", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
	defer cancel()
	r, err := d.ipamReport(ctx)
	if err != nil {
		http.Error(w, "ipam report: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(r)
}
