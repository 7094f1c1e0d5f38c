package lab

import (
	"bytes"
	"context"
	"embed"
	"net/netip"
	"os"
	"path/filepath"
	"text/template"
	"time"

	"github.com/cockroachdb/errors"
)

//go:embed bird/bird.conf.tmpl
var birdFS embed.FS

var birdTmpl = template.Must(template.ParseFS(birdFS, "bird/bird.conf.tmpl"))

// BirdConfig is the data the BIRD template is rendered with.
type BirdConfig struct {
	Name          string
	LogFile       string
	RouterID      netip.Addr
	ASN           uint32
	ExportTable   int
	RouteProtocol int
	IPv6          bool
	Fabric4       netip.Prefix
	Fabric6       netip.Prefix
	Reflector     bool // this node reflects routes (route-reflector mode, node 0)
	Peers         []BirdPeer
}

// BirdPeer is one BGP neighbour.
type BirdPeer struct {
	Name     string
	Addr     netip.Addr
	RRClient bool // the neighbour is our route-reflector client
}

// RenderBirdConfig renders the lab's BIRD 2 configuration template.
func RenderBirdConfig(c BirdConfig) ([]byte, error) {
	var b bytes.Buffer
	if err := birdTmpl.Execute(&b, c); err != nil {
		return nil, errors.Wrap(err, "lab: render bird config")
	}
	return b.Bytes(), nil
}

func (l *Lab) birdConfig(n *Node) BirdConfig {
	c := BirdConfig{
		Name:          n.Name,
		LogFile:       filepath.Join(n.Dir, "bird.log"),
		RouterID:      n.FabricAddr,
		ASN:           l.Config.ASN,
		ExportTable:   l.Config.ExportTable,
		RouteProtocol: l.Config.RouteProtocol,
		IPv6:          l.Fabric.Prefix6.IsValid(),
		Fabric4:       l.Fabric.Prefix4,
		Fabric6:       l.Fabric.Prefix6,
	}
	rr := l.Config.RouteReflector
	c.Reflector = rr && n.Index == 0
	for _, p := range l.Nodes {
		switch {
		case p == n:
		case !rr, c.Reflector:
			c.Peers = append(c.Peers, BirdPeer{Name: p.Name, Addr: p.FabricAddr, RRClient: c.Reflector})
		case p.Index == 0:
			c.Peers = append(c.Peers, BirdPeer{Name: p.Name, Addr: p.FabricAddr})
		}
	}
	return c
}

func (l *Lab) startBird(ctx context.Context, n *Node) error {
	conf, err := RenderBirdConfig(l.birdConfig(n))
	if err != nil {
		return err
	}
	if err = os.WriteFile(n.BirdConf, conf, 0o644); err != nil {
		return errors.Wrap(err, "lab: write bird config")
	}
	// -f keeps BIRD in the foreground: it is our child and we stop it by PID.
	p, err := n.StartProcess(ctx, "bird", "-f", "-c", n.BirdConf, "-s", n.BirdSock)
	if err != nil {
		return err
	}
	n.Bird = p
	return nil
}

// expectedSessions is how many BGP sessions node n has once the lab has converged.
func (l *Lab) expectedSessions(n *Node) int {
	if l.Config.RouteReflector && n.Index != 0 {
		return 1
	}
	return len(l.Nodes) - 1
}

// WaitBGPEstablished polls every node's BIRD until all of its BGP sessions are
// Established. It returns an error wrapping ErrNotReady and the last state seen when ctx
// ends first, or as soon as a BIRD has exited (its log is named in the error).
func (l *Lab) WaitBGPEstablished(ctx context.Context) error {
	last := map[string]any{}
	for {
		ready := true
		for _, n := range l.Nodes {
			if n.Bird != nil && isDone(n.Bird.Done()) {
				return errors.Wrapf(ErrNotReady, "lab: bird of %s exited (%v); see %s", n.Name, n.Bird.Err(), n.Bird.LogPath)
			}
			s, err := n.BGPSessions(ctx)
			if err != nil {
				last[n.Name] = err.Error()
				ready = false
				continue
			}
			last[n.Name] = s
			up := 0
			for _, x := range s {
				if x.Established() {
					up++
				}
			}
			if up < l.expectedSessions(n) {
				ready = false
			}
		}
		if ready {
			return nil
		}
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Wrapf(ErrNotReady, "lab: %v; last state: %v", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// KillBird kills the node's BIRD with SIGKILL (a crash: its BGP sessions drop, the routes
// it installed stay in the kernel until a new BIRD prunes them) and waits until it is gone.
func (n *Node) KillBird() error {
	if n.Bird == nil {
		return nil
	}
	return n.Bird.Kill()
}

// StartBird starts the node's BIRD again (after KillBird) with the same configuration.
// Starting it while it runs is an error.
func (n *Node) StartBird(ctx context.Context) error {
	if n.Bird != nil && !isDone(n.Bird.Done()) {
		return errors.Wrapf(ErrConfig, "bird of %s is running", n.Name)
	}
	return n.lab.startBird(ctx, n)
}
