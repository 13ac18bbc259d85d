# The README's two commands are `make demo` and `make test`; each installs
# its own prerequisites first (scripts/prereqs.sh is a no-op when all is there).
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/safeattach
# Live JVM tests are I/O- and wait-bound: run packages and tests in parallel
# even on two cores.
TEST_PARALLEL ?= 4

.PHONY: all prereqs tools build demo test check fuzz bench clean generate manifests

# Tools built from the Go module proxy into .cache/bin (once per machine):
# helm, for the chart's tests and the generated manifests.
HELM_VERSION := v4.3.2
TOOLS := $(CURDIR)/.cache/bin
export PATH := $(TOOLS):$(PATH)
tools: $(TOOLS)/helm
$(TOOLS)/helm:
	GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

all: build

prereqs:
	@bash scripts/prereqs.sh

# A static binary: without cgo there is no dynamic loader to run at every
# start, which saves ~0.7 ms of each CLI call (measured with hyperfine).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/safeattach
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/safeattach-pprof ./cmd/safeattach-pprof
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/safeattach-daemon ./cmd/safeattach-daemon
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/safeattach-kube ./cmd/safeattach-kube

demo: prereqs build
	@bash scripts/demo.sh

# Static checks first: they take seconds and fail fast. staticcheck runs
# at a pinned version through the module proxy (nothing added to go.mod).
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
check:
	@test -z "$$(gofmt -s -l . | grep -v '^testdata/')" || { echo "gofmt -s needed:"; gofmt -s -l .; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

test: prereqs tools check
	$(GO) test -race -p $(TEST_PARALLEL) -parallel $(TEST_PARALLEL) -timeout 30m -count=1 ./...

# A short run of every fuzz target from its seeds in testdata/.
fuzz:
	@for pkg in ./internal/proc ./internal/elfx ./conflicts ./kube ./jfrpprof/bounded ./asprof ./fdtransfer; do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep ^Fuzz); do \
	    $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime 20s $$pkg || exit 1; \
	  done; \
	done

bench: prereqs build
	$(GO) test -run XXX -bench . -benchmem ./...
	@bash bench/compare.sh

# deploy/kubernetes/safeattach.yaml is the chart's default rendering
# (TestManifestsAreTheChart checks it).
manifests: tools
	helm template safeattach deploy/helm/safeattach --namespace safeattach > deploy/kubernetes/safeattach.yaml

# The embedded rules as Go data, from conflicts/rules/*.yaml.
generate:
	$(GO) generate ./conflicts

clean:
	rm -rf bin
