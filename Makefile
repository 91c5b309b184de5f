# meshctl, meshproxy and meshcontroller. `make help` lists the targets.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X github.com/meshctl/mesh/internal/version.Version=$(VERSION) \
            -X github.com/meshctl/mesh/internal/version.Commit=$(COMMIT)
# The whole suite on 2 cores takes well under half an hour once the test
# environment is built; the timeout only stops a hung test.
TEST_TIMEOUT ?= 30m

.PHONY: help build install test test-deps test-short lint bench release-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# meshproxy and meshcontroller go into the image (Dockerfile), which needs
# static binaries: they are built without cgo, as goreleaser builds them.
# meshctl keeps the toolchain's default.
IN_CLUSTER := ./cmd/meshproxy ./cmd/meshcontroller

build: ## build meshctl, meshproxy and meshcontroller into bin/
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/meshctl
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(IN_CLUSTER)

install: ## install meshctl, meshproxy and meshcontroller into $GOBIN
	$(GO) install -trimpath -ldflags '$(LDFLAGS)' ./cmd/meshctl
	CGO_ENABLED=0 $(GO) install -trimpath -ldflags '$(LDFLAGS)' $(IN_CLUSTER)

test-deps: ## install what the tests need and warm the test cache (kube-apiserver, etcd, tools)
	bash scripts/test-deps.sh
	$(GO) run ./internal/testenv/prepare

test: test-deps lint ## run every test; as root this includes the network-namespace and iptables tests
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

test-short: ## run the tests that need no cluster, root or tools
	$(GO) test -short -count=1 ./...

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v /testdata/)); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

bench: ## the proxy load harness: meshproxy against direct, HAProxy and nginx (a few minutes)
	bash scripts/bench-deps.sh
	$(GO) run ./bench

release-check: ## goreleaser check and a snapshot build of every target
	bash scripts/release-check.sh

clean: ## remove build outputs
	rm -rf bin dist
