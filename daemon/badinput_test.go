package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/coil-net/coil/events"
)

func (e *env) netListWith(extra string) *libcni.NetworkConfigList {
	e.t.Helper()
	list, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.1.0","name":"coilnet","plugins":[{"type":"coil","socket":"` +
		e.sock + `","timeout":"20s"` + extra + `}]}`))
	if err != nil {
		e.t.Fatal(err)
	}
	return list
}

// expectClean fails if the node namespace has any veth or pod route, or the node holds
// any address.
func (e *env) expectClean(what string) {
	e.t.Helper()
	if vs := veths(e.t, e.nodeNS); len(vs) != 0 {
		e.t.Errorf("%s: veths left in the node namespace: %v", what, vs)
	}
	if rs := coilHostRoutes(e.t, e.nodeNS); len(rs) != 0 {
		e.t.Errorf("%s: pod routes left in the node namespace: %v", what, rs)
	}
	if h := e.held(); len(h) != 0 {
		e.t.Errorf("%s: addresses held: %v", what, h)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	e.createPool("tiny", 1, "10.200.0.0/30")
	e.startDaemon(e.config())
	ctx := context.Background()
	c := e.cni()
	_, podPath := e.pod("bad")

	t.Run("unknown pool", func(t *testing.T) {
		_, err := c.AddNetworkList(ctx, e.netListWith(`,"pool":"nope"`), podRT("bad00001", podPath))
		code, msg := cniCode(t, err)
		if code != types.ErrInvalidNetworkConfig || !strings.Contains(msg, `pool "nope" (network config "pool") does not exist`) {
			t.Errorf("got %d %q, want 7 naming the pool", code, msg)
		}
		e.expectClean("after unknown pool")
	})

	t.Run("invalid pool name", func(t *testing.T) {
		_, err := c.AddNetworkList(ctx, e.netListWith(`,"pool":"Not_A_Name"`), podRT("bad00002", podPath))
		if code, msg := cniCode(t, err); code != types.ErrInvalidNetworkConfig || !strings.Contains(msg, "Not_A_Name") {
			t.Errorf("got %d %q, want 7 naming the value", code, msg)
		}
		e.expectClean("after invalid pool name")
	})

	t.Run("pod namespace missing", func(t *testing.T) {
		const id = "bad00003"
		_, err := c.AddNetworkList(ctx, e.netList(), podRT(id, "/var/run/netns/coiltest-does-not-exist"))
		if code, msg := cniCode(t, err); code != types.ErrInvalidEnvironmentVariables || !strings.Contains(msg, "network namespace not found") {
			t.Errorf("got %d %q, want 4 (namespace not found)", code, msg)
		}
		e.expectClean("after ADD into a missing namespace")
		// The namespace is checked before anything is allocated: nothing was written.
		for _, ev := range e.nodeEvents() {
			if p, ok := ev.Payload.(*events.AddressAssigned); ok && p.ContainerID == id {
				t.Errorf("an address was assigned for an ADD into a missing namespace: %+v", p)
			}
		}
	})

	t.Run("pool exhausted", func(t *testing.T) {
		list := e.netListWith(`,"pool":"tiny"`)
		var ids []string
		for i := range 4 {
			id := fmt.Sprintf("tiny%04d", i)
			_, path := e.pod(id)
			if _, err := c.AddNetworkList(ctx, list, podRT(id, path)); err != nil {
				t.Fatalf("ADD %d of 4 into a pool of 4 addresses: %v", i+1, err)
			}
			ids = append(ids, id)
		}
		_, path := e.pod("tiny5")
		_, err := c.AddNetworkList(ctx, list, podRT("tiny0004", path))
		code, msg := cniCode(t, err)
		if code != types.ErrTryAgainLater || !strings.Contains(msg, `pool "tiny" is exhausted`) || !strings.Contains(msg, "has no free block") {
			t.Errorf("got %d %q, want 11 saying the pool is exhausted and why", code, msg)
		}
		e.expectNoLeak("tiny0004")
		for _, id := range ids {
			if err := c.DelNetworkList(ctx, list, podRT(id, "")); err != nil {
				t.Fatalf("DEL %s: %v", id, err)
			}
		}
		e.waitClean(t)
	})

	t.Run("malformed stdin", func(t *testing.T) {
		for _, tc := range []struct {
			stdin string
			code  uint
		}{
			{`{"cniVersion":"1.1.0","name":`, types.ErrDecodingFailure},
			{`["not","an","object"]`, types.ErrDecodingFailure},
			{`{"cniVersion":"1.1.0","name":"n","type":"coil","socket":"` + e.sock + `","timeout":"banana"}`, types.ErrInvalidNetworkConfig},
			{`{"cniVersion":"1.1.0","type":"coil","socket":"` + e.sock + `"}`, types.ErrInvalidNetworkConfig},
		} {
			got := runPlugin(t, "ADD", "bad00009", podPath, tc.stdin)
			if got.Code != tc.code {
				t.Errorf("stdin %s: got %d %q, want %d", tc.stdin, got.Code, got.Msg, tc.code)
			}
		}
		e.expectClean("after malformed stdin")
	})

	t.Run("coild not running", func(t *testing.T) {
		down := filepath.Join(e.sockDir, "nobody.sock")
		list, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.1.0","name":"coilnet","plugins":[{"type":"coil","socket":"` + down + `"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.AddNetworkList(ctx, list, podRT("bad00010", podPath))
		if code, msg := cniCode(t, err); code != types.ErrTryAgainLater || !strings.Contains(msg, down) {
			t.Errorf("got %d %q, want 11 naming the socket", code, msg)
		}
	})

	// Everything above is settled once the background DELs are done.
	e.waitClean(t)
}

func (e *env) waitClean(t *testing.T) {
	t.Helper()
	waitFor(t, func() bool { return len(veths(t, e.nodeNS)) == 0 && len(e.held()) == 0 }, "no veth and no held address")
	e.expectClean("at the end")
}

// runPlugin execs the plugin with stdin (for what libcni refuses to send) and returns
// the CNI error it printed.
func runPlugin(t *testing.T, command, containerID, netns, stdin string) *types.Error {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "coil"))
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netns,
		"CNI_IFNAME=eth0", "CNI_PATH=" + binDir}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		t.Fatalf("plugin %s with stdin %s succeeded: %s", command, stdin, stdout.String())
	}
	var e types.Error
	if err := json.Unmarshal(stdout.Bytes(), &e); err != nil {
		t.Fatalf("plugin %s printed no CNI error: %v: %q (stderr %s)", command, err, stdout.String(), stderr.String())
	}
	return &e
}
