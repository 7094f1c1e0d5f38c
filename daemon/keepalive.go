package daemon

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseAttempt bounds one renewal of the lease.
const leaseAttempt = 2 * time.Second

// leaseHedge: a renewal not answered within this long is sent again beside the first
// (a new stream, which the client places on the next member), up to leaseHedges calls in
// one attempt; the first answer wins. Renewing is idempotent.
const (
	leaseHedge  = 400 * time.Millisecond
	leaseHedges = 4
)

// keepLeaseAlive renews the lease every ttl/3 until ctx ends, and closes the returned
// channel when the lease is lost: etcd says it does not exist (expired, revoked), or no
// renewal succeeded for ttl (etcd has expired it by then, or is unreachable; appends are
// fenced on the lease either way).
//
// Each renewal is a KeepAliveOnce, a new stream the client may place on any member,
// bounded by leaseAttempt and tried again at once after a failure; one not answered
// within leaseHedge is sent again beside it (renewLease). A member that stops answering
// without closing its connections (paused, stuck on a disk) then costs a hedge, not the
// lease: without hedging, two renewals in a row placed on a paused member (2 s each,
// against a 6 s TTL in TestEtcdMemberPausedKeepsSessions) lost it. clientv3's KeepAlive
// keeps a single stream on one member: a paused member held it until gRPC's keep-alive
// pings gave up (5 s + 3 s) after up to ttl/3 without a renewal, and in the lab a 13 s
// pause of one member, a follower as well, expired the leases of the coilds whose stream
// went through it (3 pauses in 6): their sessions ended and their ADDs failed (issue 13,
// the chaos soak).
//
// An ADD whose append was fenced (the lease is gone from etcd) asks for a renewal at
// once through d.leaseCheck, so that the session ends and the next one starts without
// waiting for the next renewal (awaitNewSession).
func (d *Daemon) keepLeaseAlive(ctx context.Context, id clientv3.LeaseID, ttl time.Duration) <-chan struct{} {
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		renewed := time.Now()
		// d.leaseCheck: an append was fenced: renew now, to learn whether the lease is gone.
		repeat(ctx, ttl/3, d.leaseCheck, func() time.Duration {
			err := d.renewLease(ctx, id)
			switch {
			case err == nil:
				renewed = time.Now()
				return ttl / 3
			case ctx.Err() != nil:
				return 0
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				d.log.Warn("lease gone", "lease", int64(id), "since last renewal", time.Since(renewed).Round(time.Millisecond))
				return 0
			case time.Since(renewed) >= ttl:
				d.log.Warn("lease not renewed for its TTL", "lease", int64(id), "ttl", ttl, "err", err)
				return 0
			default:
				d.log.Warn("lease renewal failed; trying again", "lease", int64(id), "since last renewal", time.Since(renewed).Round(time.Millisecond), "err", err)
				return 100 * time.Millisecond
			}
		})
	}()
	return lost
}

// renewLease renews the lease once: a KeepAliveOnce, sent again beside the first every
// leaseHedge it goes unanswered (up to leaseHedges in all), within leaseAttempt. It
// returns nil on the first success, ErrLeaseNotFound as soon as etcd says so, else the
// last error.
func (d *Daemon) renewLease(ctx context.Context, id clientv3.LeaseID) error {
	actx, cancel := context.WithTimeout(ctx, leaseAttempt)
	defer cancel() // ends the calls still out
	errs := make(chan error, leaseHedges)
	sent := 0
	send := func() {
		sent++
		go func() {
			_, err := d.cli.KeepAliveOnce(actx, id)
			errs <- err
		}()
	}
	send()
	hedge := time.NewTicker(leaseHedge)
	defer hedge.Stop()
	var last error
	for answered := 0; answered < sent; {
		select {
		case err := <-errs:
			answered++
			if err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return err
			}
			last = err
		case <-hedge.C:
			if sent < leaseHedges {
				send()
			}
		}
	}
	return last
}
