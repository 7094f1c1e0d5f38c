package kube_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coil-net/coil/kube"
)

// TestSelectPoolFixedIPs: the pod annotation coil.cybozu.com/ip comes with the pool
// selection (whatever chose the pool); a bad value is ErrBadAnnotation naming the pod;
// without a pod (cnitool) there are none.
func TestSelectPoolFixedIPs(t *testing.T) {
	pod := func(ann map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "db-0", UID: "u1", Annotations: ann}}
	}
	sel, err := kube.SelectPool(pod(map[string]string{kube.IPAnnotation: "198.18.5.7, fd00::7"}), nil, "", "default")
	if err != nil || sel.Pool != "default" || fmt.Sprint(sel.FixedIPs) != "[198.18.5.7 fd00::7]" {
		t.Fatalf("%+v %v", sel, err)
	}
	sel, err = kube.SelectPool(pod(map[string]string{kube.IPAnnotation: "198.18.5.7", kube.PoolAnnotation: "blue"}), nil, "", "default")
	if err != nil || sel.Pool != "blue" || fmt.Sprint(sel.FixedIPs) != "[198.18.5.7]" {
		t.Fatalf("%+v %v", sel, err)
	}
	_, err = kube.SelectPool(pod(map[string]string{kube.IPAnnotation: "198.18.5.7;x"}), nil, "", "default")
	if !errors.Is(err, kube.ErrBadAnnotation) || !strings.Contains(err.Error(), "pod db/db-0") || !strings.Contains(err.Error(), `coil.cybozu.com/ip="198.18.5.7;x"`) {
		t.Fatalf("bad annotation: %v", err)
	}
	if sel, err := kube.SelectPool(nil, nil, "", "default"); err != nil || sel.FixedIPs != nil {
		t.Fatalf("no pod: %+v %v", sel, err)
	}
}
