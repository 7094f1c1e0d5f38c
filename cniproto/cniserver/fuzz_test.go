package cniserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/cniproto/cniserver"
)

// checkingHandler fails the fuzz test if a request that breaks cniproto's rules reaches
// it: the server must refuse those before the handler.
type checkingHandler struct{ t *testing.T }

func (h *checkingHandler) check(op string, r *cniproto.Request) error {
	if e := r.Validate(op); e != nil {
		h.t.Fatalf("%s reached the handler though invalid: %v (%+v)", op, e, r)
	}
	return nil
}

func (h *checkingHandler) Add(_ context.Context, r *cniproto.Request) (*cniproto.AddResult, error) {
	return &cniproto.AddResult{PodIfName: r.IfName}, h.check("add", r)
}
func (h *checkingHandler) Del(_ context.Context, r *cniproto.Request) error { return h.check("del", r) }
func (h *checkingHandler) Check(_ context.Context, r *cniproto.Request) error {
	if err := h.check("check", r); err != nil {
		return err
	}
	return cniproto.UnknownContainer(r.ContainerID, r.IfName)
}

func (h *checkingHandler) GC(_ context.Context, r *cniproto.GCRequest) error {
	if e := r.Validate(); e != nil {
		h.t.Fatalf("gc reached the handler though invalid: %v", e)
	}
	return errors.New("not implemented here")
}
func (h *checkingHandler) Status(context.Context) error { return nil }

var fuzzPaths = []string{cniproto.PathAdd, cniproto.PathDel, cniproto.PathCheck, cniproto.PathGC, cniproto.PathStatus, "/v1/nope", "/v2/add"}

// FuzzServe: whatever body arrives on whichever path, the server answers with one of its
// statuses and, for anything but 200, a cniproto.Error with a code; and the handler only
// ever sees requests that pass cniproto's rules.
func FuzzServe(f *testing.F) {
	for i, body := range []string{
		`{"containerID":"c1","ifName":"eth0","netns":"/var/run/netns/p1","pool":"default"}`,
		`{"containerID":"c1","ifName":"eth0"}`,
		`{"containerID":"c1","ifName":"eth0","netns":"/n","prevAddrs":["10.0.0.1"]}`,
		`{"validAttachments":[{"containerID":"c1","ifName":"eth0"}]}`,
		`{}`, `{"validAttachments":[{"bogus":1}]}`, `{"containerID":"../x","ifName":"eth0","netns":"/n"}`,
		`{} {}`, `[1,2`, `null`, "\x00\xff",
	} {
		f.Add(uint8(i), []byte(body))
	}
	h := &checkingHandler{}
	srv, err := cniserver.New(h, filepath.Join(f.TempDir(), "coild.sock"), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(srv.Close)
	mux := srv.Mux()
	f.Fuzz(func(t *testing.T, pathIndex uint8, body []byte) {
		h.t = t
		path := fuzzPaths[int(pathIndex)%len(fuzzPaths)]
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusOK:
			return
		case rec.Code == http.StatusNotFound && (path == "/v1/nope" || path == "/v2/add"):
			return
		case rec.Code != http.StatusBadRequest && rec.Code != http.StatusRequestEntityTooLarge && rec.Code != http.StatusInternalServerError:
			t.Fatalf("%s: unexpected HTTP %d: %q", path, rec.Code, rec.Body.String())
		}
		var e cniproto.Error
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == 0 || e.Msg == "" {
			t.Fatalf("%s: HTTP %d with a body that is no cniproto.Error: %q (%v)", path, rec.Code, rec.Body.String(), err)
		}
	})
}
