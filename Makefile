# quarantine-watch: build, test, benchmark.

GO ?= go
KAFKA_IMAGE_TAG ?= quarantine-watch/kafka:4.1.1
FUZZTIME ?= 10m

.PHONY: all build test unit integration vet fuzz bench docker-up kafka-image

all: vet test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$$(git describe --tags --always --dirty 2>/dev/null || echo devel)" -o bin/quarantine-watch ./cmd/quarantine-watch

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# test is what CI runs: every test (fuzz seed corpora included) under the
# race detector (but the generator's and the matcher's adversarial values,
# which have no concurrency and are slow under it), and the integration
# suite against a real Kafka when Docker or KAFKA_BROKERS is there (it says
# how to run it when neither is), verbose so that its eos- lines are in
# the log.
test: vet
	$(GO) test -count=1 -race -timeout 20m $$($(GO) list ./... | grep -Ev '/(internal/cloudtrailgen|integration)$$')
	$(GO) test -count=1 -timeout 10m ./internal/cloudtrailgen/
	$(GO) test -count=1 -timeout 10m -run '^(TestAdversarialValues|TestValidatedECSDocumentAllocations)$$' ./matcher/
	$(GO) test -count=1 -race -timeout 30m -v ./integration/

unit:
	$(GO) test -count=1 -short ./...

integration:
	$(GO) test -count=1 -v ./integration/...

# fuzz runs each fuzz target for FUZZTIME.
fuzz:
	$(GO) test ./matcher/ -run '^$$' -fuzz '^FuzzMatcher$$' -fuzztime $(FUZZTIME)
	$(GO) test ./matcher/ -run '^$$' -fuzz '^FuzzIdentityFilter$$' -fuzztime $(FUZZTIME)
	$(GO) test ./matcher/ -run '^$$' -fuzz '^FuzzSelect$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test ./matcher/ -run '^$$' -bench . -benchmem -count 5

# bench-scan is the benchmark of scan (internal/scan/bench, docs/benchmarks.md):
# bin/quarantine-watch scan beside wc -l and gzip -dc on a generated 300 MB
# file, cached in the user's cache directory. BENCH_SCAN_FLAGS adds flags,
# e.g. BENCH_SCAN_FLAGS="-rounds 9 -compare /path/to/an/older/quarantine-watch".
BENCH_SCAN_FLAGS ?=
.PHONY: bench-scan
bench-scan: build
	$(GO) run ./internal/scan/bench -bin bin/quarantine-watch $(BENCH_SCAN_FLAGS)

# docker-up starts dockerd (host networking only) unless Docker answers.
docker-up:
	integration/kafkaimage/docker-up.sh

# kafka-image builds $(KAFKA_IMAGE_TAG) from Debian and Maven packages, without
# a container registry; it does nothing when the image exists.
kafka-image:
	integration/kafkaimage/build.sh $(KAFKA_IMAGE_TAG)

QW_IMAGE ?= quarantine-watch:dev
.PHONY: image image-smoke deploy-check

# image builds $(QW_IMAGE) offline, FROM scratch (the Dockerfile needs a
# container registry).
image:
	deploy/image/build-scratch.sh $(QW_IMAGE)

# image-smoke runs $(QW_IMAGE) as Kubernetes will: version, a 5 s demo, uid 65532.
image-smoke: image
	deploy/image/smoke.sh $(QW_IMAGE)

# deploy-check validates deploy/kubernetes and deploy/compose offline, and
# checks and tests the Prometheus alerting rules (promtool).
deploy-check:
	deploy/kubernetes/validate.sh
	deploy/compose/validate.sh
	deploy/prometheus/check.sh

# bench-e2e is the end-to-end benchmark (integration/bench/e2e, docs/benchmarks.md):
# quarantine-watch beside a raw franz-go consumer, a Kafka Streams EOS peer
# (integration/streams-peer) and a naive encoding/json loop, on a real broker.
# BENCH_E2E_FLAGS adds flags, e.g. BENCH_E2E_FLAGS="-rounds 1 -pprof bin/qw.pprof".
BENCH_E2E_FLAGS ?=
.PHONY: bench-e2e
bench-e2e: docker-up kafka-image build
	mvn -q -B -Dstyle.color=never -f integration/streams-peer/pom.xml package
	$(GO) build -o bin/bench-e2e ./integration/bench/e2e
	KAFKA_IMAGE=$(KAFKA_IMAGE_TAG) bin/bench-e2e $(BENCH_E2E_FLAGS)

# eos-safety is the transaction safety test (integration/safety_test.go):
# the service on its default flags behind a Kafka-frame-aware proxy that
# delivers EndTxn, TxnOffsetCommit and AddOffsetsToTxn late, into the next
# open transaction, under transactions v1 (--transactions-v2=false) and v2
# (the default), each on a broker of its own; it prints one
# eos-safety line per version. Not in make test: about 6 minutes each.
# Logs in bin/eos-safety-v1.log and bin/eos-safety-v2.log, the test's
# ledger (a line per transaction) in bin/eos-safety-v1.ledger and -v2.ledger.
.PHONY: eos-safety
eos-safety: docker-up kafka-image
	@mkdir -p bin; status=0; \
	for v in v1 v2; do \
	  QW_EOS_SAFETY=$$v QW_EOS_SAFETY_LEDGER=$(CURDIR)/bin/eos-safety-$$v.ledger KAFKA_IMAGE=$(KAFKA_IMAGE_TAG) TESTCONTAINERS_RYUK_DISABLED=true QW_REQUIRE_KAFKA=1 \
	    $(GO) test -tags eossafety -count=1 -timeout 30m -run '^TestTransactionSafety$$' -v ./integration/ >bin/eos-safety-$$v.log 2>&1 || status=1; \
	  grep -h '^eos-safety:' bin/eos-safety-$$v.log || { echo "eos-safety: version=$$v printed no line; see bin/eos-safety-$$v.log"; status=1; }; \
	done; exit $$status

# soak runs TestSoak (integration/soak_test.go, behind the soak build tag, so
# neither make test nor CI compiles it; method in docs/reliability.md): the
# dense oracle on three brokers for SOAK_DURATION at SOAK_RATE records/s, two
# instances on the default flags under the deployment's GOMEMLIMIT, a SIGKILL,
# a scale-out and back and a broker bounce in the first half, every instance
# sampled every 10 s. It prints a table and one soak: line.
SOAK_DURATION ?= 30m
SOAK_RATE ?= 250
SOAK_TIMEOUT ?= 80m
.PHONY: soak
soak: docker-up kafka-image
	SOAK_DURATION=$(SOAK_DURATION) SOAK_RATE=$(SOAK_RATE) KAFKA_IMAGE=$(KAFKA_IMAGE_TAG) \
	TESTCONTAINERS_RYUK_DISABLED=true QW_REQUIRE_KAFKA=1 \
	$(GO) test -tags soak -count=1 -timeout $(SOAK_TIMEOUT) -run '^TestSoak$$' -v ./integration/
