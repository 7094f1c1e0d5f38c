package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/netplumb"
)

// reconcile makes the kernel agree with the projection:
//   - DEL intents left by a crash are finished (veth deleted, then address released);
//   - a Coil veth with no attachment in the log is deleted (leaked by a crash mid-ADD
//     after a rollback, or by a DEL whose release was lost);
//   - an attachment whose veth is missing is released, with an event saying why (the ADD
//     was interrupted before plumbing, or the pod's namespace went away); one whose veth
//     is still pending (prepared, never configured: the ADD was interrupted mid-way)
//     has the veth deleted first, then the address released;
//   - the export table is synced to the node's blocks.
//
// Attachments with an ADD or DEL in progress, or one that finished during the pass, are
// left alone.
func (d *Daemon) reconcile(ctx context.Context, startup bool) error {
	d.mu.Lock()
	d.recent = map[string]bool{}
	d.mu.Unlock()
	var errs error
	if err := d.resumeIntents(ctx); err != nil {
		errs = errors.CombineErrors(errs, err)
	}
	// Snapshots in this order: attachments, then links. An attachment whose veth is
	// missing from the links had its ADD in progress at the listing, or nothing will make
	// the veth; a veth with no attachment was listed after the attachments were read, so
	// an ADD that made it is busy or finished since the pass began. Each action first
	// claims its veth (claim), which skips busy and recently finished ones and makes a
	// new ADD of that attachment wait until the action is done.
	attachments := d.node.Attachments()
	links, err := d.plumber.List(ctx)
	if err != nil {
		return errors.CombineErrors(errs, errors.Wrap(err, "list veths"))
	}
	have, pending := map[string]bool{}, map[string]bool{}
	for _, l := range links {
		have[l.Name] = true
		pending[l.Name] = l.Pending
	}
	want := map[string]bool{}
	for _, a := range attachments {
		veth := netplumb.HostVethName(a.ContainerID, a.IfName)
		want[veth] = true
		if (have[veth] && !pending[veth]) || (!have[veth] && !d.keepUnproven(&a, veth)) || !d.claim(veth, true) {
			continue
		}
		reason := "reconcile: host veth " + veth + " missing (the pod's namespace is gone or its ADD was interrupted)"
		action := "release_missing_veth"
		if have[veth] {
			// Prepared but never configured: the ADD stopped between the allocation and
			// the end of the plumbing. The link goes first, then the address.
			reason = "reconcile: host veth " + veth + " missing its addresses and routes (its ADD was interrupted)"
			action = "release_unplumbed_veth"
			if err := d.plumber.TeardownMany(ctx, []string{veth}); err != nil {
				d.finishDel(veth)
				errs = errors.CombineErrors(errs, errors.Wrapf(err, "delete unplumbed veth %s", veth))
				continue
			}
		}
		_, err := d.node.Release(ctx, a.ContainerID, a.IfName, reason)
		d.finishDel(veth)
		if err != nil {
			errs = errors.CombineErrors(errs, errors.Wrapf(err, "release %s/%s", a.ContainerID, a.IfName))
			continue
		}
		d.metrics.reconcileActions.WithLabelValues(action).Inc()
		d.metrics.releases.WithLabelValues("reconcile").Inc()
		d.log.Info("released address of a missing veth", "container", a.ContainerID, "if", a.IfName, "addrs", a.Addrs)
	}
	var leaked []string
	for _, l := range links {
		if !want[l.Name] && d.claim(l.Name, true) {
			leaked = append(leaked, l.Name)
		}
	}
	if len(leaked) > 0 {
		err := d.plumber.TeardownMany(ctx, leaked)
		for _, v := range leaked {
			d.finishDel(v)
		}
		if err != nil {
			errs = errors.CombineErrors(errs, errors.Wrap(err, "delete leaked veths"))
		} else {
			d.metrics.reconcileActions.WithLabelValues("delete_leaked_veth").Add(float64(len(leaked)))
			d.log.Info("deleted leaked veths", "veths", leaked, "startup", startup)
		}
	}
	d.syncExport(ctx, syncForReconcile)
	return errs
}

// keepUnproven reports whether the address of an attachment whose host veth is missing
// may be released: only if this namespace is provably where the veth was made. That is
// so for attachments made since the node record's TrustFrom (by a coild of this state
// directory, in this namespace, during this boot: see nodeRecord) and for attachments
// older than the boot (no veth survives a reboot). For any other, the veth may well exist
// in a namespace coild does not see (a coild for this node ran in another namespace, or
// with another state directory, or the log was imported): the address is kept, and that
// is logged once per session. Such an address is still released by its pod's CNI DEL or
// GC, by the Kubernetes leak collector, or after the next reboot.
func (d *Daemon) keepUnproven(a *allocator.Assignment, veth string) bool {
	if a.Seq >= d.trustFrom.Load() || a.Since.Before(d.boot.Time) {
		return true
	}
	if !d.kept[veth] {
		d.kept[veth] = true
		d.metrics.reconcileActions.WithLabelValues("keep_unproven_missing_veth").Inc()
		d.log.Warn("not releasing the address of a missing veth: it was made before this state directory's coild plumbed this namespace, maybe in another namespace",
			"veth", veth, "container", a.ContainerID, "if", a.IfName, "addrs", a.Addrs, "seq", a.Seq, "since", a.Since,
			"provenFrom", d.trustFrom.Load(), "hint", "its pod's CNI DEL or GC, the Kubernetes leak collector or the next reboot releases it")
	}
	return false
}

// claim marks veth as being deleted by the reconciler unless an ADD or DEL of it is in
// progress or (with skipRecent) finished since the pass began; finishDel releases the
// claim. A new ADD of the attachment waits for it.
func (d *Daemon) claim(veth string, skipRecent bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inflight[veth] > 0 || (skipRecent && d.recent[veth]) || d.deleting[veth] != nil {
		return false
	}
	d.deleting[veth] = make(chan struct{})
	return true
}

// resumeIntents finishes DELs that were answered but not completed before a crash.
func (d *Daemon) resumeIntents(ctx context.Context) error {
	dir := filepath.Join(d.cfg.StateDir, "del")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return errors.Wrap(err, "read DEL intents")
	}
	var batch []delItem
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		parts := strings.SplitN(string(b), "\n", 4)
		if len(parts) < 3 || netplumb.HostVethName(parts[0], parts[1]) != e.Name() {
			d.log.Warn("dropping unreadable DEL intent", "file", e.Name())
			_ = os.Remove(filepath.Join(dir, e.Name()))
			continue
		}
		if !d.claim(e.Name(), false) {
			continue // its DEL (or an ADD) is running
		}
		batch = append(batch, delItem{containerID: parts[0], ifName: parts[1], veth: e.Name(), reason: parts[2]})
	}
	if len(batch) > 0 {
		d.log.Info("finishing interrupted DELs", "count", len(batch))
		d.metrics.reconcileActions.WithLabelValues("resume_del").Add(float64(len(batch)))
		d.runDels(ctx, batch)
	}
	return nil
}
