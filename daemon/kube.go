package daemon

import (
	"context"
	"strings"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/kube"
)

// setupKube connects to Kubernetes when configured (--kubeconfig, or in a pod). Without
// either, the Kubernetes features are off: pools come from the network config or
// --default-pool, and no leak collection runs.
func (d *Daemon) setupKube() error {
	rc, err := kube.RESTConfig(d.cfg.Kubeconfig)
	if errors.Is(err, kube.ErrDisabled) {
		d.log.Info("Kubernetes integration off (no --kubeconfig and not in a pod)")
		return nil
	}
	if err != nil {
		return err
	}
	cs, err := kube.NewClient(rc, "coild/"+d.cfg.Node)
	if err != nil {
		return err
	}
	d.kubeWake = make(chan struct{}, 1)
	d.labelsWake = make(chan struct{}, 1)
	d.pods = kube.NewPodCache(kube.PodCacheConfig{
		Client: cs, Node: d.cfg.Node, Logger: d.log,
		OnPodDeleted: func(kube.PodRef) { wake(d.kubeWake) },
		OnNodeLabels: func() { wake(d.labelsWake) }, // the session records them (recordLabels)
	})
	d.leaks = kube.NewLeakCollector(kube.LeakConfig{Pods: d.pods, Grace: d.cfg.LeakGrace})
	d.log.Info("Kubernetes integration on", "server", rc.Host)
	return nil
}

// runKube runs the informers and the leak collector until ctx ends. The collector
// looks every --leak-check-interval, and soon after a pod of the node is deleted.
func (d *Daemon) runKube(ctx context.Context) {
	if d.pods == nil {
		return
	}
	done := make(chan struct{})
	go func() { defer close(done); d.pods.Run(ctx) }()
	defer func() { <-done }()
	every(ctx, d.cfg.LeakCheckInterval, d.kubeWake, func() {
		if d.ready.Load() {
			d.collectLeaks(ctx)
		}
	})
}

// collectLeaks releases the addresses of attachments whose pod is confirmed gone
// (kube.LeakCollector: grace period, then a fresh GET). The release goes through the
// DEL path: the veth is deleted first, then the address released with the reason.
func (d *Daemon) collectLeaks(ctx context.Context) {
	var atts []kube.Attachment
	for _, a := range d.node.Attachments() {
		atts = append(atts, kube.Attachment{ContainerID: a.ContainerID, IfName: a.IfName,
			Pod: kube.PodRef{Namespace: a.PodNamespace, Name: a.PodName, UID: a.PodUID}})
	}
	leaks, err := d.leaks.Check(ctx, atts)
	if err != nil {
		d.log.Warn("leak check: API server", "err", err)
	}
	for _, l := range leaks {
		d.log.Info("releasing leaked address", "container", l.ContainerID, "if", l.IfName, "reason", l.Reason)
		if err := d.enqueueDelGC(ctx, l.ContainerID, l.IfName, l.Reason, l.Kind); err != nil {
			d.log.Warn("release leaked address", "container", l.ContainerID, "err", err)
		}
	}
}

// selectPool chooses the pool of a new attachment: with Kubernetes on, pod annotation,
// namespace annotation, network config, --default-pool (kube.ResolvePool); without it,
// the network config, else --default-pool. It also returns the pod's UID when known.
func (d *Daemon) selectPool(ctx context.Context, req *cniproto.Request) (kube.Selection, error) {
	if d.pods == nil {
		sel, err := kube.SelectPool(nil, nil, req.Pool, d.cfg.DefaultPool)
		sel.PodUID = req.PodUID
		return sel, err
	}
	sel, err := d.pods.ResolvePool(ctx, kube.PodRef{Namespace: req.PodNamespace, Name: req.PodName, UID: req.PodUID}, req.Pool, d.cfg.DefaultPool)
	if err != nil {
		pod := req.PodNamespace + "/" + req.PodName
		switch {
		case errors.Is(err, kube.ErrBadAnnotation):
			what := "pool annotation"
			if strings.Contains(err.Error(), kube.IPAnnotation+"=") {
				what = "annotation " + kube.IPAnnotation
			}
			return sel, cniproto.NewError(cniproto.CodeInvalidNetworkConfig, "invalid "+what+" for pod "+pod, err.Error())
		case errors.Is(err, kube.ErrPodNotFound), errors.Is(err, kube.ErrNamespaceNotFound):
			return sel, cniproto.NewError(cniproto.CodeInvalidEnv, "cannot choose a pool: pod "+pod+" not found in Kubernetes", err.Error())
		default:
			return sel, cniproto.NewError(cniproto.CodeTryAgainLater, "cannot choose a pool: Kubernetes API server unavailable; try again", err.Error())
		}
	}
	if sel.PodUID == "" {
		sel.PodUID = req.PodUID
	}
	return sel, nil
}
