# Coil Makefile. Every target installs what it needs (see scripts/setup.sh).
SHELL := /bin/bash
GO ?= go
TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)
export GOFLAGS := -buildvcs=false

GOLANGCI_VERSION := v2.15.0
CNI_VERSION := v1.3.1
PLUGINS_VERSION := v1.10.0

BINARIES := bin/coil bin/coild bin/coilctl bin/coil-controller
# The images' tag (docs/kubernetes.md); deploy/kustomization.yaml uses the same.
VERSION ?= $(shell cat VERSION)
# Kubernetes binaries for the integration tests (kube/kubetest), built from the module
# proxy (test/kube) once per machine and cached.
KUBE_VERSION := v1.37.2
export COIL_KUBE_BINS ?= $(HOME)/.cache/coil/kube/$(KUBE_VERSION)
# The container runtime side of the kubelet nodes (lab/kubelab), built from the module
# proxy (test/nodekit) once per machine and cached: containerd, its shim, ctr, runc,
# crictl, critest.
NODE_KIT_VERSIONS := containerd-v2.4.2-runc-v1.5.3-critools-v1.37.0
export COIL_NODE_KIT ?= $(HOME)/.cache/coil/nodekit/$(NODE_KIT_VERSIONS)
# Packages whose tests need root and network namespaces run one at a time.
TEST_FLAGS ?= -count=1 -timeout 15m

.PHONY: all build setup setup-test tools test vet lint bench demo demo-down demo-kube soak clean fmt kube-bins node-kit images fuzz

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/coil ./cmd/coil
	$(GO) build -o bin/coild ./cmd/coild
	$(GO) build -o bin/coilctl ./cmd/coilctl
	$(GO) build -o bin/coil-controller ./cmd/coil-controller

# images writes the OCI image archives bin/images/{coil,coil-pause,coil-testapp}.tar
# (ghcr.io/coil-net/coil, localhost/coil-pause, localhost/coil-testapp, tag $(VERSION)),
# built offline from scratch with static binaries; the same sources give the same
# digests (SOURCE_DATE_EPOCH, default 0, is the time stamped in them). docs/kubernetes.md.
images:
	$(GO) run ./cmd/coil-images --out bin/images --tag $(VERSION)

# kube-bins builds kube-apiserver, kubectl, kubelet, kube-scheduler and
# kube-controller-manager $(KUBE_VERSION) into $(COIL_KUBE_BINS) in one go build (a no-op
# when cached; cold times in docs/kubernetes.md).
kube-bins:
	KUBE_VERSION=$(KUBE_VERSION) ./scripts/kube-bins.sh

# node-kit builds containerd, containerd-shim-runc-v2, ctr, runc, crictl and critest into
# $(COIL_NODE_KIT) (a no-op when cached; cold time in docs/kubernetes.md).
node-kit: setup
	./scripts/node-kit.sh

# setup installs Debian packages (bird2, iproute2) and the CNI tools the tests use.
setup:
	./scripts/setup.sh

# setup-test is setup plus what only the tests need: Debian's containerd 1.6 and runc
# (test/runtimes drives the plugin with `ctr run --cni`), iptables and nftables.
setup-test:
	./scripts/setup.sh test

tools:
	./scripts/setup.sh tools

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

# test runs every test, privileged netns and end-to-end tests included.
# They need root; under CI=true a missing privilege is a failure, not a skip.
test: setup-test build vet kube-bins node-kit images
	# A failed test is run once more (--rerun-fails): the first failure stays in the output
	# and in the summary line, and .test.json keeps every event for later diagnosis. A
	# test that fails twice fails the run.
	$(TOOLS)/gotestsum --format pkgname-and-test-fails --format-hide-empty-pkg --jsonfile .test.json \
		--rerun-fails=1 --packages ./... -- $(TEST_FLAGS) -p 2

# fuzz runs every fuzz target (func FuzzXxx in a _test.go file) for FUZZTIME each, one
# after the other (scripts/fuzz.sh; docs/security.md). .ci/run runs it with FUZZTIME=2s.
FUZZTIME ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

# lint also fails on an untidy go.mod/go.sum (go mod tidy -diff prints what tidy would change).
lint: tools
	$(GO) mod tidy -diff
	$(TOOLS)/golangci-lint run ./...

bench: setup build kube-bins node-kit
	./bench/run.sh

# demo runs a 2-node BGP lab with pods pinging across nodes, then tears it down (docs/demo.md).
demo: setup build
	$(GO) run ./cmd/coil-demo -bin bin

# demo-kube runs a control plane and two kubelet nodes, installs Coil with kubectl apply -k,
# spreads a Deployment over both nodes and checks pod-to-pod traffic (docs/demo.md).
demo-kube: setup build kube-bins node-kit
	$(GO) run ./cmd/coil-demo kube -bin bin

# soak is the chaos soak (docs/faults.md): 3 nodes with BIRD, a 3-member etcd, pods churned
# through cnitool and a random fault every few seconds, for SOAK_SECONDS (default 600).
# It ends with a one-line summary and exits 0 only with no violation. Not part of `make
# test` (which runs a 60-second soak, lab/soak's TestSoak).
SOAK_SECONDS ?= 600
soak: setup
	SOAK_SECONDS=$(SOAK_SECONDS) $(GO) run ./cmd/coil-soak

# demo-down removes what a crashed or killed demo left (its namespaces, cgroups and processes).
demo-down:
	$(GO) run ./cmd/coil-demo down

clean:
	rm -rf bin .test.log
